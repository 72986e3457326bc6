import QtQuick

// gui-v2's Page: a FocusScope with a title.
FocusScope {
    property string title
    property color backgroundColor: Theme.color_page_background
}

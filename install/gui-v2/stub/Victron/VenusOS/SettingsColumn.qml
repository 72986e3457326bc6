import QtQuick

// gui-v2's SettingsColumn: a column of list items inside a list model.
Column {
    property bool preferredVisible: true
    spacing: 2
}

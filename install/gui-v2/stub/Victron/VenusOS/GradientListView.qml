import QtQuick

// gui-v2's GradientListView: a ListView filling the page.
ListView {
    width: parent ? parent.width : 0
    height: parent ? parent.height : 0
    interactive: true
    spacing: 2
}

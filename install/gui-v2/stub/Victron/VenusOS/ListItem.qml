import QtQuick

// gui-v2's ListItem (AbstractListItem and ListSetting's properties the page uses).
Rectangle {
    property string text
    property string caption
    property bool preferredVisible: true
    property bool interactive
    property color indicatorColor: "transparent"
    visible: preferredVisible
    width: parent ? parent.width : Theme.geometry_listItem_width
    height: visible ? implicitHeight : 0
    implicitHeight: Math.max(56, column.implicitHeight + 24)
    color: Theme.color_listItem_background

    default property alias content: column.data

    Rectangle {
        width: 6
        height: parent.height
        color: parent.indicatorColor
    }

    Column {
        id: column
        x: 24
        width: parent.width - 48
        anchors.verticalCenter: parent.verticalCenter
        spacing: 4
    }
}

import QtQuick

// gui-v2's ListText: a label, a secondary text on the right, an optional caption below.
ListItem {
    id: root
    property string secondaryText
    property color secondaryTextColor: Theme.color_listItem_secondaryText

    Item {
        width: parent.width
        height: Math.max(label.implicitHeight, secondary.implicitHeight)
        Text {
            id: label
            width: parent.width * 0.45
            text: root.text
            color: Theme.color_font_primary
            font.pixelSize: Theme.font_size_body2
            elide: Text.ElideRight
        }
        Text {
            id: secondary
            anchors.right: parent.right
            width: parent.width * 0.55
            horizontalAlignment: Text.AlignRight
            text: root.secondaryText
            color: root.secondaryTextColor
            font.pixelSize: Theme.font_size_body2
            elide: Text.ElideLeft
        }
    }
    Text {
        width: parent.width
        visible: text.length > 0
        text: root.caption
        color: Theme.color_font_secondary
        font.pixelSize: Theme.font_size_caption
        wrapMode: Text.Wrap
    }
}

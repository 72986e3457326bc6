import QtQuick

// gui-v2's ListNavigation: a ListText-like row that opens a page when clicked.
ListText {
    id: root
    signal clicked
    interactive: true

    // Over the whole row, not in its column of texts.
    MouseArea {
        parent: root
        anchors.fill: parent
        onClicked: root.clicked()
    }
}

pragma Singleton
import QtQuick

// gui-v2's Theme: the dark colour scheme's colours and font sizes the page uses.
QtObject {
    readonly property color color_page_background: "#000000"
    readonly property color color_listItem_background: "#1c1c1c"
    readonly property color color_font_primary: "#ffffff"
    readonly property color color_font_secondary: "#969591"
    readonly property color color_listItem_secondaryText: "#969591"
    readonly property color color_red: "#f35c58"
    readonly property color color_orange: "#f0962e"
    readonly property color color_green: "#72b84c"
    readonly property int font_size_body1: 18
    readonly property int font_size_body2: 22
    readonly property int font_size_caption: 16
    readonly property int geometry_listItem_width: 800
}

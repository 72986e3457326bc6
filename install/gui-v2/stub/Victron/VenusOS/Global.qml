pragma Singleton
import QtQuick

// gui-v2's Global: pageManager.pushPage(url, properties) opens a page.
QtObject {
    property var pageManager
}

import QtQuick
import Victron.VenusOS

// The render's window content: a stub device of the dumped service, and the integration's page
// created from its url with that device, as gui-v2's device page pushes it.
Rectangle {
    id: root

    required property url pageUrl
    required property var values
    required property int productId

    color: Theme.color_page_background

    Device {
        id: device
        serviceUid: "mock/com.victronenergy.battery.aggregate"
        productId: root.productId
    }

    Loader {
        id: loader
        anchors.fill: parent
    }

    // gui-v2's page manager as the page calls it: the pushed page takes the loader's place.
    QtObject {
        id: pageManager

        function pushPage(url: string, properties: var) {
            loader.setSource(url, properties)
        }
    }

    // The integration's page again, as the back button would show it.
    function showPage() {
        loader.setSource(root.pageUrl, { "device": device })
    }

    // New values, as the service signals them.
    onValuesChanged: StubBackend.values = root.values

    Component.onCompleted: {
        Global.pageManager = pageManager
        StubBackend.values = root.values
        loader.setSource(root.pageUrl, { "device": device })
    }
}

pragma ComponentBehavior: Bound
import QtQuick
import Victron.VenusOS
import "Listing.js" as Listing

// The bank and its packs, opened from the aggregate battery's device page. Every value is one
// of the service's own paths under the device's service uid, so the page reads the same on
// the GX display, in the remote console and on VRM.
DeviceListPluginPage {
    id: root

    readonly property string bindPrefix: root.device.serviceUid
    readonly property var listing: Listing.parse(listingItem.valid ? listingItem.value : undefined)

    function text(item) {
        return item.valid ? String(item.value) : "--"
    }

    function stateColor(state) {
        switch (state) {
        case "online": return Theme.color_green
        case "stale": return Theme.color_orange
        case "lost": return Theme.color_red
        }
        return Theme.color_font_secondary
    }

    title: qsTr("Bank and packs")

    VeQuickItem { id: listingItem; uid: root.bindPrefix + "/System/Batteries" }
    VeQuickItem { id: onlineItem; uid: root.bindPrefix + "/System/BatteriesOnline" }
    VeQuickItem { id: voltageItem; uid: root.bindPrefix + "/Dc/0/Voltage" }
    VeQuickItem { id: currentItem; uid: root.bindPrefix + "/Dc/0/Current" }
    VeQuickItem { id: powerItem; uid: root.bindPrefix + "/Dc/0/Power" }
    VeQuickItem { id: socItem; uid: root.bindPrefix + "/Soc" }
    VeQuickItem { id: cvlItem; uid: root.bindPrefix + "/Info/MaxChargeVoltage" }
    VeQuickItem { id: cclItem; uid: root.bindPrefix + "/Info/MaxChargeCurrent" }
    VeQuickItem { id: dclItem; uid: root.bindPrefix + "/Info/MaxDischargeCurrent" }
    VeQuickItem { id: modeItem; uid: root.bindPrefix + "/Info/ChargeMode" }

    GradientListView {
        model: VisibleItemModel {
            ListText {
                text: qsTr("Packs online")
                secondaryText: root.text(onlineItem)
            }
            ListText {
                text: qsTr("Bank")
                secondaryText: [Listing.fixed(voltageItem.value, 2, " V"),
                                Listing.fixed(currentItem.value, 1, " A"),
                                Listing.fixed(powerItem.value, 0, " W"),
                                Listing.fixed(socItem.value, 0, " %")].join("  ")
            }
            ListText {
                text: qsTr("Limits (CVL / CCL / DCL)")
                secondaryText: [Listing.fixed(cvlItem.value, 2, " V"),
                                Listing.fixed(cclItem.value, 1, " A"),
                                Listing.fixed(dclItem.value, 1, " A")].join(" / ")
            }
            ListText {
                text: qsTr("Reason for the limits")
                caption: root.text(modeItem)
            }
            ListText {
                preferredVisible: !root.listing.ok
                text: qsTr("Packs")
                caption: root.listing.problem
            }
            SettingsColumn {
                width: parent ? parent.width : 0
                preferredVisible: root.listing.ok

                // A count, not the list: the listing changes at nearly every tick, and a new
                // list as the model would destroy and make every row each time (a tap, the
                // focus and the scroll position lost). With a count the rows stay and show
                // the new values; only a change in the number of packs adds or removes rows.
                Repeater {
                    model: root.listing.packs.length
                    delegate: ListNavigation {
                        required property int index
                        // null for the moment the list is shorter and the row not yet gone.
                        readonly property var pack: index < root.listing.packs.length
                                                    ? root.listing.packs[index] : null
                        text: pack ? pack.name : ""
                        secondaryText: pack ? Listing.summary(pack) : ""
                        secondaryTextColor: root.stateColor(pack ? pack.state : "")
                        indicatorColor: !pack || pack.state === "online" ? "transparent"
                                                                        : root.stateColor(pack.state)
                        caption: pack ? Listing.caption(pack) : ""
                        onClicked: {
                            if (pack)
                                Global.pageManager.pushPage(
                                    "qrc:/dbus-aggregate-batteries/PackPage.qml",
                                    { "bindPrefix": root.bindPrefix, "packName": pack.name,
                                      "title": pack.name })
                        }
                    }
                }
            }
        }
    }
}

pragma ComponentBehavior: Bound
import QtQuick
import Victron.VenusOS
import "Listing.js" as Listing

// One pack's details, read again from the service's listing so that they stay live.
Page {
    id: root

    property string bindPrefix
    property string packName
    readonly property var listing: Listing.parse(listingItem.valid ? listingItem.value : undefined)
    readonly property var pack: Listing.find(listing, packName)

    function yesNo(value) {
        return value ? qsTr("Yes") : qsTr("No")
    }

    VeQuickItem { id: listingItem; uid: root.bindPrefix + "/System/Batteries" }

    GradientListView {
        model: VisibleItemModel {
            ListText {
                preferredVisible: root.pack === null
                text: root.packName
                caption: root.listing.ok ? qsTr("This pack is no longer in the listing") : root.listing.problem
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("State")
                secondaryText: root.pack ? Listing.stateText(root.pack.state) : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Service")
                secondaryText: root.pack && root.pack.service !== "" ? root.pack.service : "--"
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Voltage")
                secondaryText: root.pack ? Listing.fixed(root.pack.voltage, 2, " V") : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Current")
                secondaryText: root.pack ? Listing.fixed(root.pack.current, 1, " A") : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("State of charge")
                secondaryText: root.pack ? Listing.fixed(root.pack.soc, 1, " %") : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Lowest cell")
                secondaryText: root.pack ? Listing.fixed(root.pack.minCell, 3, " V") : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Highest cell")
                secondaryText: root.pack ? Listing.fixed(root.pack.maxCell, 3, " V") : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Blocking charge")
                secondaryText: root.pack ? root.yesNo(root.pack.blockingCharge) : ""
            }
            ListText {
                preferredVisible: root.pack !== null
                text: qsTr("Blocking discharge")
                secondaryText: root.pack ? root.yesNo(root.pack.blockingDischarge) : ""
            }
            // A pack left out is not merged: no bound of the bank applies to it at all.
            ListText {
                preferredVisible: root.pack !== null && root.pack.state !== "left out"
                text: qsTr("Protected by its BMS alone")
                secondaryText: root.pack ? Listing.bmsOnlyText(root.pack) : ""
                caption: root.pack ? Listing.bmsOnlyCaption(root.pack) : ""
            }
        }
    }
}

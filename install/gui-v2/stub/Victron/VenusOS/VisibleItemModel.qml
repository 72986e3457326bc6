import QtQml.Models

// gui-v2's VisibleItemModel: an object model of list items (it drops those not preferredVisible).
ObjectModel {
}

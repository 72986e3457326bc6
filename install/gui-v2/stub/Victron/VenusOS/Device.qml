import QtQuick

// gui-v2's Device (BaseDevice's properties).
QtObject {
    property bool valid: true
    property string serviceUid
    property string serviceType
    property int deviceInstance
    property int productId
    property string productName
    property string customName
    property string name
}

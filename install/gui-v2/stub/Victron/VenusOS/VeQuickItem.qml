import QtQuick

// veutil's VeQuickItem as gui-v2 uses it: a uid, its value and whether it is valid. Here the
// value comes from StubBackend.
QtObject {
    property string uid
    readonly property var value: StubBackend.values[uid]
    readonly property bool valid: value !== undefined && value !== null
}

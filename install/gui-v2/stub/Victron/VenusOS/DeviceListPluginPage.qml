import QtQuick

// gui-v2's DeviceListPluginPage: the page a device-list integration opens, given the device.
Page {
    required property Device device
}

pragma Singleton
import QtQuick

// Not a gui-v2 type: the values the render feeds, by uid (the service uid and the path).
QtObject {
    property var values: ({})
}

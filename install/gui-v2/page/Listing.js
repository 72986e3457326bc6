.pragma library

// Reading the service's `/System/Batteries` text (one JSON entry per pack) for the pages.
// Nothing here computes a figure: it checks the text and formats what the service published.

const STATES = ["online", "stale", "lost", "left out"]

// {ok, packs, problem}: `problem` says in words why the text could not be read.
function parse(text) {
    if (text === undefined || text === null)
        return { ok: false, packs: [], problem: qsTr("The service publishes no pack listing yet") }
    let value
    try {
        value = JSON.parse(String(text))
    } catch (e) {
        return { ok: false, packs: [], problem: qsTr("The pack listing is not readable") }
    }
    if (!Array.isArray(value))
        return { ok: false, packs: [], problem: qsTr("The pack listing is not readable") }
    const packs = []
    for (let k = 0; k < value.length; ++k) {
        const entry = value[k]
        if (entry === null || typeof entry !== "object" || typeof entry.name !== "string"
                || STATES.indexOf(entry.state) < 0) {
            return { ok: false, packs: [], problem: qsTr("The pack listing is not readable") }
        }
        packs.push({
            name: entry.name,
            service: typeof entry.service === "string" ? entry.service : "",
            state: entry.state,
            voltage: number(entry.voltage),
            current: number(entry.current),
            soc: number(entry.soc),
            minCell: number(entry.min_cell_voltage),
            maxCell: number(entry.max_cell_voltage),
            blockingCharge: entry.blocking_charge === true,
            blockingDischarge: entry.blocking_discharge === true,
            bmsOnly: bmsOnly(entry)
        })
    }
    return { ok: true, packs: packs, problem: "" }
}

// The pack named `name` in a parsed listing, or null.
function find(listing, name) {
    for (let k = 0; k < listing.packs.length; ++k) {
        if (listing.packs[k].name === name)
            return listing.packs[k]
    }
    return null
}

// The bounds that rest on the pack's BMS alone: a list of names, or `undefined` when the
// service does not publish them (an older version), or null when the value is not a list of
// names. One pack's odd value never makes the whole listing unreadable.
function bmsOnly(entry) {
    if (!("bms_only" in entry))
        return undefined
    const names = entry.bms_only
    if (!Array.isArray(names))
        return null
    for (let k = 0; k < names.length; ++k) {
        if (typeof names[k] !== "string")
            return null
    }
    return names.slice()
}

// How many bounds rest on the BMS alone; -1 when not known. (A list handed through a
// Repeater's model is no longer a JS Array, so only its length and items are used.)
function bmsOnlyCount(pack) {
    const names = pack.bmsOnly
    return names === undefined || names === null ? -1 : names.length
}

// A bound's name in the owner's words; a name this page does not know is shown as it is.
function boundText(name) {
    switch (name) {
    case "max_cell_voltage": return qsTr("high cell")
    case "min_cell_voltage": return qsTr("low cell")
    case "temperature": return qsTr("temperature")
    }
    return String(name)
}

// The details row: which bounds only the pack's own BMS enforces.
function bmsOnlyText(pack) {
    if (pack.bmsOnly === undefined)
        return qsTr("Not published by the service")
    if (pack.bmsOnly === null)
        return qsTr("Not readable")
    if (pack.bmsOnly.length === 0)
        return qsTr("None")
    const words = []
    for (let k = 0; k < pack.bmsOnly.length; ++k)
        words.push(boundText(pack.bmsOnly[k]))
    return words.join(", ")
}

// Why the row matters, said only when some bound rests on the BMS alone.
function bmsOnlyCaption(pack) {
    if (bmsOnlyCount(pack) <= 0)
        return ""
    return qsTr("The pack publishes no value for these: the bank's limits cannot stop it, only its own BMS can")
}

function number(v) {
    return typeof v === "number" && isFinite(v) ? v : NaN
}

// `v` with `decimals` and `unit`, or "--" for a value the service does not have.
function fixed(v, decimals, unit) {
    const n = typeof v === "number" ? v : (typeof v === "string" && v !== "" ? Number(v) : NaN)
    return isFinite(n) ? n.toFixed(decimals) + unit : "--"
}

function stateText(state) {
    switch (state) {
    case "online": return qsTr("Online")
    case "stale": return qsTr("Stale (held)")
    case "lost": return qsTr("Lost")
    case "left out": return qsTr("Left out")
    }
    return state
}

function blockingText(pack) {
    if (pack.blockingCharge && pack.blockingDischarge)
        return qsTr("blocks charge and discharge")
    if (pack.blockingCharge)
        return qsTr("blocks charge")
    if (pack.blockingDischarge)
        return qsTr("blocks discharge")
    return ""
}

// The row's right-hand text: state first, so that a pack not online is seen at a glance.
function summary(pack) {
    if (pack.state === "left out")
        return stateText(pack.state)
    const parts = [stateText(pack.state), fixed(pack.voltage, 2, " V"), fixed(pack.current, 1, " A"),
                   fixed(pack.soc, 0, " %")]
    return parts.join("  ")
}

// The row's caption: the cells and what the pack blocks.
function caption(pack) {
    if (pack.state === "left out")
        return qsTr("Another cell count than the bank: not merged")
    let text = qsTr("Cells %1 … %2").arg(fixed(pack.minCell, 3, " V")).arg(fixed(pack.maxCell, 3, " V"))
    const blocking = blockingText(pack)
    if (blocking !== "")
        text += "  ·  " + blocking
    if (bmsOnlyCount(pack) > 0)
        text += "  ·  " + qsTr("partly guarded by its BMS alone")
    return text
}

//! The `safety:` section from the old settings: which old setting gives each key, the margin
//! above the strategy's highest cell voltage, and the largest current a strategy asks for.

use super::*;

/// How a strategy's safety bound is derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Strategy {
    LfpBalancing,
    LtoCv,
    SerialBattery,
}

impl Strategy {
    pub(super) fn plugin(self) -> &'static str {
        match self {
            Strategy::LfpBalancing => "lfp-balancing",
            Strategy::LtoCv => "lto-cv",
            Strategy::SerialBattery => "serialbattery",
        }
    }
}

/// A safety key and how the old settings give it; `None`: they do not.
struct SafetyRule {
    key: &'static str,
    derive: fn(&Ctx, Strategy) -> Result<Option<Derived>, ImportError>,
}

/// A derived value and the old settings it came from.
struct Derived {
    value: f64,
    /// Said after the key in the report's table.
    note: Option<&'static str>,
    from: Vec<&'static str>,
    why: &'static str,
}

/// The `safety:` keys. A new key is one entry; the temperature bounds come from nothing (the
/// old program had none) and are chosen, marked in the file (see [`safety_fallback`]).
const SAFETY: &[SafetyRule] = &[
    SafetyRule {
        key: "min_cell_voltage",
        derive: |ctx, strategy| {
            if strategy == Strategy::SerialBattery {
                return passed_through_cell(ctx, "MIN_CELL_VOLTAGE", |(min, _)| min);
            }
            extreme(
                ctx,
                &["MIN_CELL_VOLTAGE"],
                "the lowest cell voltage the old settings allow; check it against the cells' data sheet",
                f64::min,
            )
        },
    },
    SafetyRule {
        key: "max_cell_voltage",
        derive: |ctx, strategy| {
            let names: &[&'static str] = match strategy {
                Strategy::LfpBalancing => &[
                    "MAX_CELL_VOLTAGE",
                    "BALANCING_VOLTAGE",
                    "CHARGE_VOLTAGE_LIST",
                ],
                Strategy::LtoCv => &["MAX_CELL_VOLTAGE", "CHARGE_VOLTAGE"],
                Strategy::SerialBattery => {
                    return passed_through_cell(ctx, "MAX_CELL_VOLTAGE", |(_, max)| max);
                }
            };
            let highest = extreme(ctx, names, "", f64::max)?;
            Ok(highest.map(|d| with_margin(d.value, d.from)))
        },
    },
    SafetyRule {
        key: "max_charge_current",
        derive: |ctx, strategy| {
            if strategy == Strategy::SerialBattery {
                return Ok(given_current(ctx, |(charge, _)| charge));
            }
            bank_current(
                ctx,
                strategy,
                "MAX_CHARGE_CURRENT",
                "CELL_CHARGE_LIMITED_CURRENT",
                &[
                    "MAX_CHARGE_CURRENT_ABOVE_CV1",
                    "MAX_CHARGE_CURRENT_ABOVE_CV2",
                ],
            )
        },
    },
    SafetyRule {
        key: "max_discharge_current",
        derive: |ctx, strategy| {
            if strategy == Strategy::SerialBattery {
                return Ok(given_current(ctx, |(_, discharge)| discharge));
            }
            bank_current(
                ctx,
                strategy,
                "MAX_DISCHARGE_CURRENT",
                "CELL_DISCHARGE_LIMITED_CURRENT",
                &[],
            )
        },
    },
    SafetyRule {
        key: "plugin_failures",
        derive: |_, _| Ok(None),
    },
    SafetyRule {
        key: "min_charge_temperature",
        derive: |_, _| Ok(None),
    },
    SafetyRule {
        key: "max_charge_temperature",
        derive: |_, _| Ok(None),
    },
    SafetyRule {
        key: "min_discharge_temperature",
        derive: |_, _| Ok(None),
    },
    SafetyRule {
        key: "max_discharge_temperature",
        derive: |_, _| Ok(None),
    },
];

/// What a safety key gets when the old settings have nothing for it.
fn safety_fallback(key: &str) -> Option<(&'static str, &'static str)> {
    match key {
        "plugin_failures" => Some(("5", "the old program had no such bound; 5 is the default")),
        // The old program had no temperature bounds; common LiFePO4 data-sheet values, so
        // that the imported config runs safe until checked.
        "min_charge_temperature" => Some(("0", TEMPERATURE_CHOSEN)),
        "max_charge_temperature" => Some(("45", TEMPERATURE_CHOSEN)),
        "min_discharge_temperature" => Some(("-20", TEMPERATURE_CHOSEN)),
        "max_discharge_temperature" => Some(("55", TEMPERATURE_CHOSEN)),
        _ => None,
    }
}

const TEMPERATURE_CHOSEN: &str =
    "the old program had no temperature bounds; common LiFePO4 values, check them against the cells' data sheet (LTO charges far below 0 °C)";

/// How far the safety stop lies above the highest cell voltage the strategy asks for, in V.
/// The old `MAX_CELL_VOLTAGE` started a gentle CVL reduction; `safety.max_cell_voltage` stops
/// charging outright. Equal, every touch of the strategy's own bound would be a hard stop.
pub const CELL_VOLTAGE_MARGIN_V: f64 = 0.05;
/// The highest safety stop per cell the margin may reach: the data-sheet maximum of LiFePO4
/// (3.65 V) for voltages of that range, of LTO (2.8 V) below 3 V.
const LFP_CELL_CEILING_V: f64 = 3.65;
const LTO_CELL_CEILING_V: f64 = 2.8;

/// `safety.max_cell_voltage` from the highest cell voltage the strategy asks for: that plus
/// [`CELL_VOLTAGE_MARGIN_V`], never above the chemistry's data-sheet maximum; where the old
/// settings already reach it, no margin is left, and the comment says so.
fn with_margin(highest: f64, from: Vec<&'static str>) -> Derived {
    let ceiling = if highest >= 3.0 {
        LFP_CELL_CEILING_V
    } else {
        LTO_CELL_CEILING_V
    };
    let with_margin = ((highest + CELL_VOLTAGE_MARGIN_V) * 1000.0).round() / 1000.0;
    if with_margin <= ceiling {
        Derived {
            value: with_margin,
            note: Some("(0.05 V above the strategy's bound)"),
            from,
            why: "the highest cell voltage the old settings ask for plus 0.05 V, so that the \
                  strategy's own bound (a CVL reduction) is reached before this hard stop; check \
                  it against the cells' data sheet",
        }
    } else {
        Derived {
            value: highest,
            note: Some("(no margin: at the chemistry's maximum)"),
            from,
            why: "the highest cell voltage the old settings ask for, with no margin: 0.05 V more \
                  would pass the data-sheet maximum of the chemistry (3.65 V LiFePO4, 2.8 V LTO); \
                  lower the strategy's voltages to leave one, and check against the cells' data \
                  sheet",
        }
    }
}

/// A cell bound of the pass-through settings, whose cell voltages the old program never used:
/// `--cell-voltages` (`pick` takes its side), else the setting where the user evidently set it
/// (the highest with the margin), else none. A shipped default (LTO) is never the bound: on
/// other cells it would stop a healthy bank.
fn passed_through_cell(
    ctx: &Ctx,
    setting: &'static str,
    pick: fn((f64, f64)) -> f64,
) -> Result<Option<Derived>, ImportError> {
    if let Some(pair) = ctx.given.cell_voltages {
        return Ok(Some(Derived {
            value: pick(pair),
            note: None,
            from: vec!["--cell-voltages"],
            why: "the cells' bound given on the command line (the old program used no cell \
                  voltage in pass-through mode); check it against the cells' data sheet",
        }));
    }
    let Some(value) = ctx.evident(setting)? else {
        return Ok(None);
    };
    Ok(Some(if setting == "MAX_CELL_VOLTAGE" {
        with_margin(value, vec![setting])
    } else {
        Derived {
            value,
            note: None,
            from: vec![setting],
            why: "the lowest cell voltage the old settings give (the old program used it only \
                  with its own charge policy); check it against the cells' data sheet",
        }
    }))
}

/// A current cap of the pass-through settings: only `--max-currents`, as the old program capped
/// none of the BMSs' limits in that mode.
fn given_current(ctx: &Ctx, pick: fn((f64, f64)) -> f64) -> Option<Derived> {
    ctx.given.max_currents.map(|pair| Derived {
        value: pick(pair),
        note: None,
        from: vec!["--max-currents"],
        why: "the bank's cap given on the command line (the old program capped none of the \
              BMSs' limits in pass-through mode)",
    })
}

/// What a user of pass-through settings gives for the missing safety keys.
fn passed_through_how(missing: &[String]) -> Vec<String> {
    let mut how = Vec::new();
    if missing.iter().any(|k| k.ends_with("_cell_voltage")) {
        how.push(
            "the old program used no cell voltage in pass-through mode (OWN_CHARGE_PARAMETERS = \
             False) and MIN_CELL_VOLTAGE and MAX_CELL_VOLTAGE are not both the user's own \
             (4.x: in config.ini; 3.x: other than the LTO values settings.py shipped with): \
             give the cells' bounds with --cell-voltages MIN:MAX (e.g. 2.9:3.65 for LiFePO4), \
             or set both settings"
                .to_string(),
        );
    }
    if missing.iter().any(|k| k.ends_with("_current")) {
        how.push(
            "the old program capped none of the BMSs' limits in pass-through mode: give the \
             bank's highest currents with --max-currents CHARGE:DISCHARGE (A)"
                .to_string(),
        );
    }
    how
}

/// The highest (`pick` = max) or lowest (min) value of the named settings.
fn extreme(
    ctx: &Ctx,
    names: &[&'static str],
    why: &'static str,
    pick: fn(f64, f64) -> f64,
) -> Result<Option<Derived>, ImportError> {
    let mut best: Option<f64> = None;
    let mut from = Vec::new();
    for name in names {
        let values = match ctx.s.get(name).map(|e| &e.value) {
            Some(Value::List(_)) => ctx.numbers(name)?.unwrap_or_default(),
            Some(_) => ctx.number(name)?.into_iter().collect(),
            None => continue,
        };
        if let Some(top) = values.into_iter().reduce(pick) {
            from.push(*name);
            best = Some(best.map_or(top, |b| pick(b, top)));
        }
    }
    Ok(best.map(|value| Derived {
        value,
        note: None,
        from,
        why,
    }))
}

/// The largest bank current a strategy would ask for: the full scale times the curve's largest
/// factor, or the largest of the steps.
fn bank_current(
    ctx: &Ctx,
    strategy: Strategy,
    scale: &'static str,
    factors: &'static str,
    steps: &[&'static str],
) -> Result<Option<Derived>, ImportError> {
    let Some(full) = ctx.number(scale)? else {
        return Ok(None);
    };
    let mut from = vec![scale];
    let value = match strategy {
        Strategy::LfpBalancing => {
            let top = ctx
                .numbers(factors)?
                .filter(|f| !f.is_empty())
                .map(|f| f.into_iter().fold(0.0, f64::max));
            if top.is_some() {
                from.push(factors);
            }
            full * top.unwrap_or(1.0)
        }
        Strategy::LtoCv => {
            let mut value = full;
            for step in steps {
                if let Some(v) = ctx.number(step)? {
                    from.push(step);
                    value = value.max(v);
                }
            }
            value
        }
        Strategy::SerialBattery => full,
    };
    let why = match strategy {
        Strategy::SerialBattery => {
            "the old full-scale current; the BMSs' own limits above it are lowered to it"
        }
        _ => "the largest current the old settings ask for",
    };
    Ok(Some(Derived {
        value,
        note: None,
        from,
        why,
    }))
}

pub(super) fn safety(ctx: &mut Ctx, strategy: Strategy) -> Result<(), ImportError> {
    for rule in SAFETY {
        let key = format!("safety.{}", rule.key);
        match (rule.derive)(ctx, strategy)? {
            Some(derived) => {
                let value = yaml_number(derived.value);
                let comment = format!("from {}: {}", derived.from.join(", "), derived.why);
                ctx.tree.set(&key, value.clone(), Some(comment));
                let label = match derived.note {
                    Some(note) => format!("{key} {note}"),
                    None => key.clone(),
                };
                for name in &derived.from {
                    ctx.record(name, label.clone(), value.clone());
                }
            }
            None => match safety_fallback(rule.key) {
                Some((value, why)) => ctx.choose(&key, value.into(), why),
                None => ctx.missing.push(key),
            },
        }
    }
    if strategy == Strategy::SerialBattery {
        ctx.missing_how = passed_through_how(&ctx.missing);
    }
    Ok(())
}

#[cfg(test)]
mod margin_tests {
    use super::*;

    #[test]
    fn the_safety_stop_lies_a_margin_above_the_strategy_but_never_above_the_chemistry() {
        // LTO 2.55 V and LFP 3.45 V: 0.05 V above.
        assert_eq!(with_margin(2.55, vec![]).value, 2.6);
        assert_eq!(with_margin(3.45, vec![]).value, 3.5);
        // LFP 3.62 V: 3.67 V would pass 3.65 V; no margin, and the report says so.
        let at_ceiling = with_margin(3.62, vec![]);
        assert_eq!(at_ceiling.value, 3.62);
        assert!(at_ceiling.note.unwrap().contains("no margin"));
        // LTO 2.78 V: the same below 2.8 V.
        assert_eq!(with_margin(2.78, vec![]).value, 2.78);
    }
}

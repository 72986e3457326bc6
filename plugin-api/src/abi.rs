//! The types that cross the ABI, and the conversions of the plain views to and from them.
//!
//! Plugin authors never see these: they get and return the plain [`BankView`],
//! [`CurrentInputs`] and [`StrategyOutput`], which the code [`crate::export_plugin!`] generates
//! converts. What crosses is built so that a minor version can add to it:
//!
//! * **Input views are `abi_stable` prefix types** ([`BankRef`], [`BatteryRef`],
//!   [`InputsRef`] and the device refs), passed by a pointer to memory the host owns for the
//!   length of the call. A minor version appends fields after the last prefix field; a plugin
//!   built before reads the fields it knows at the offsets it knows, and a plugin built after
//!   reads an appended field through an accessor that gives its documented default when the
//!   host lacks it. Lists hold pointers, not the views themselves, so that a grown view does
//!   not change a list's stride. Every field is `Copy` (numbers, `RStr`, `RSlice`, references):
//!   the lifetime `'a` of the host's memory is in every type, so a plugin cannot keep a view
//!   past the call.
//! * **Enums are `abi_stable` non-exhaustive enums** (`*_NE`): a minor version may add a
//!   variant, and the side that does not know it sees an error from `as_enum()` instead of an
//!   invalid value.
//! * **The output is a plain `#[repr(C)]` struct** returned by value, so its fields are fixed for
//!   a major version; its enums are non-exhaustive.

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::{ROption, RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;

use crate::bank::{BankView, BatteryState_NE, BatteryView};
use crate::current::{
    CurrentInputs, DcClass_NE, DcSourceView, ShuntClass_NE, ShuntView, SolarChargerView, VebusView,
};
use crate::limits::{FeedInRequest, FeedInRequest_NE, SocReset, SocReset_NE, StrategyOutput};
use crate::LocalDate;

/// One battery as it crosses the ABI (see [`BatteryView`] for each field).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = BatteryRef)))]
#[allow(missing_docs)]
pub struct BatteryAbi<'a> {
    pub name: RStr<'a>,
    pub service: RStr<'a>,
    pub state: &'a BatteryState_NE,
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
    pub voltages_sum_v: ROption<f64>,
    pub installed_capacity_ah: ROption<f64>,
    pub soc_pct: ROption<f64>,
    pub max_cell_voltage_v: ROption<f64>,
    pub min_cell_voltage_v: ROption<f64>,
    pub cell_voltages_v: RSlice<'a, ROption<f64>>,
    pub modules_blocking_charge: u32,
    pub modules_blocking_discharge: u32,
    pub allow_to_charge: ROption<i32>,
    pub allow_to_discharge: ROption<i32>,
    pub max_charge_voltage_v: ROption<f64>,
    pub max_charge_current_a: ROption<f64>,
    pub max_discharge_current_a: ROption<f64>,
    #[sabi(last_prefix_field)]
    pub charge_mode: ROption<RStr<'a>>,
}

/// The bank as it crosses the ABI (see [`BankView`] for each field).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = BankRef)))]
#[allow(missing_docs)]
pub struct BankAbi<'a> {
    pub batteries: RSlice<'a, BatteryRef<'a>>,
    pub cells_per_battery: u32,
    pub batteries_expected: u32,
    pub batteries_online: u32,
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
    pub installed_capacity_ah: f64,
    pub soc_pct: ROption<f64>,
    pub charge_ah: ROption<f64>,
    pub max_cell_voltage_v: ROption<f64>,
    pub max_cell_id: ROption<RStr<'a>>,
    pub min_cell_voltage_v: ROption<f64>,
    pub min_cell_id: ROption<RStr<'a>>,
    pub modules_blocking_charge: u32,
    pub modules_blocking_discharge: u32,
    pub date: LocalDate,
    #[sabi(last_prefix_field)]
    pub dt_s: f64,
}

/// A Multi or Quattro as it crosses the ABI (see [`VebusView`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = VebusRef)))]
#[allow(missing_docs)]
pub struct VebusAbi<'a> {
    pub service: RStr<'a>,
    pub connected: ROption<i32>,
    #[sabi(last_prefix_field)]
    pub current_a: ROption<f64>,
}

/// A solar charger as it crosses the ABI (see [`SolarChargerView`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SolarChargerRef)))]
#[allow(missing_docs)]
pub struct SolarChargerAbi<'a> {
    pub service: RStr<'a>,
    #[sabi(last_prefix_field)]
    pub current_a: ROption<f64>,
}

/// A SmartShunt as it crosses the ABI (see [`ShuntView`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ShuntRef)))]
#[allow(missing_docs)]
pub struct ShuntAbi<'a> {
    pub service: RStr<'a>,
    pub class: &'a ShuntClass_NE,
    pub device_instance: ROption<i32>,
    pub custom_name: RStr<'a>,
    #[sabi(last_prefix_field)]
    pub current_a: ROption<f64>,
}

/// Another DC device as it crosses the ABI (see [`DcSourceView`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = DcSourceRef)))]
#[allow(missing_docs)]
pub struct DcSourceAbi<'a> {
    pub service: RStr<'a>,
    pub class: &'a DcClass_NE,
    pub device_instance: ROption<i32>,
    pub custom_name: RStr<'a>,
    #[sabi(last_prefix_field)]
    pub current_a: ROption<f64>,
}

/// A current source's inputs as they cross the ABI (see [`CurrentInputs`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = InputsRef)))]
#[allow(missing_docs)]
pub struct InputsAbi<'a> {
    pub bms_current_a: f64,
    pub bms_power_w: f64,
    pub bank_voltage_v: f64,
    pub vebus: RSlice<'a, VebusRef<'a>>,
    pub solar_chargers: RSlice<'a, SolarChargerRef<'a>>,
    pub smartshunts: RSlice<'a, ShuntRef<'a>>,
    #[sabi(last_prefix_field)]
    pub dc_sources: RSlice<'a, DcSourceRef<'a>>,
}

/// A strategy's result as it crosses the ABI (see [`StrategyOutput`]).
#[repr(C)]
#[derive(StableAbi)]
#[allow(missing_docs)]
pub struct OutputAbi {
    pub cvl_v: f64,
    pub ccl_a: f64,
    pub dcl_a: f64,
    pub soc_reset: SocReset_NE,
    pub feed_in: FeedInRequest_NE,
    pub mode: RString,
    pub state_changed: bool,
}

fn opt_str(value: &ROption<RString>) -> ROption<RStr<'_>> {
    value.as_ref().map(|s| s.as_rstr())
}

/// Prefix refs of `items`, built by `abi` into storage that lives for the call of `then`.
fn with_refs<'a, T, A, R, Out>(
    items: &'a [T],
    abi: impl Fn(&'a T) -> WithMetadata<A>,
    to_ref: impl Fn(&WithMetadata<A>) -> R,
    then: impl FnOnce(&[R]) -> Out,
) -> Out
where
    A: abi_stable::prefix_type::PrefixTypeTrait,
{
    let storage: Vec<WithMetadata<A>> = items.iter().map(abi).collect();
    let refs: Vec<R> = storage.iter().map(to_ref).collect();
    then(&refs)
}

// SAFETY (for every `as_prefix` below): the `WithMetadata` it points to lives in a local
// variable or vector of the function that calls `then` and outlives that call; `then` is
// generic over the lifetime of the ref it gets and cannot return it.

/// Lends `bank` to `then` as it crosses the ABI (the host's side).
pub fn with_bank_ref<Out>(bank: &BankView, then: impl FnOnce(BankRef<'_>) -> Out) -> Out {
    with_refs(
        &bank.batteries,
        |b: &BatteryView| {
            WithMetadata::new(BatteryAbi {
                name: b.name.as_rstr(),
                service: b.service.as_rstr(),
                state: &b.state,
                voltage_v: b.voltage_v,
                current_a: b.current_a,
                power_w: b.power_w,
                voltages_sum_v: b.voltages_sum_v,
                installed_capacity_ah: b.installed_capacity_ah,
                soc_pct: b.soc_pct,
                max_cell_voltage_v: b.max_cell_voltage_v,
                min_cell_voltage_v: b.min_cell_voltage_v,
                cell_voltages_v: b.cell_voltages_v.as_rslice(),
                modules_blocking_charge: b.modules_blocking_charge,
                modules_blocking_discharge: b.modules_blocking_discharge,
                allow_to_charge: b.allow_to_charge,
                allow_to_discharge: b.allow_to_discharge,
                max_charge_voltage_v: b.max_charge_voltage_v,
                max_charge_current_a: b.max_charge_current_a,
                max_discharge_current_a: b.max_discharge_current_a,
                charge_mode: opt_str(&b.charge_mode),
            })
        },
        |w| BatteryRef(unsafe { w.as_prefix() }),
        |batteries| {
            let abi = WithMetadata::new(BankAbi {
                batteries: RSlice::from_slice(batteries),
                cells_per_battery: bank.cells_per_battery,
                batteries_expected: bank.batteries_expected,
                batteries_online: bank.batteries_online,
                voltage_v: bank.voltage_v,
                current_a: bank.current_a,
                power_w: bank.power_w,
                installed_capacity_ah: bank.installed_capacity_ah,
                soc_pct: bank.soc_pct,
                charge_ah: bank.charge_ah,
                max_cell_voltage_v: bank.max_cell_voltage_v,
                max_cell_id: opt_str(&bank.max_cell_id),
                min_cell_voltage_v: bank.min_cell_voltage_v,
                min_cell_id: opt_str(&bank.min_cell_id),
                modules_blocking_charge: bank.modules_blocking_charge,
                modules_blocking_discharge: bank.modules_blocking_discharge,
                date: bank.date,
                dt_s: bank.dt_s,
            });
            then(BankRef(unsafe { abi.as_prefix() }))
        },
    )
}

/// The plain view of a bank that crossed the ABI (the plugin's side).
pub fn bank_from_ref(bank: BankRef<'_>) -> BankView {
    bank_reusing(bank, None)
}

/// [`bank_from_ref`] into the view of the last tick, reusing its texts and cell lists (the
/// plugin's side, at every tick): the same view, without an allocation per battery.
pub fn refill_bank<'v>(view: &'v mut Option<BankView>, bank: BankRef<'_>) -> &'v BankView {
    let before = view.take();
    view.insert(bank_reusing(bank, before))
}

/// The bank's view, in the batteries, texts and cell lists of `before` where there is one.
fn bank_reusing(bank: BankRef<'_>, before: Option<BankView>) -> BankView {
    let (mut batteries, max_cell_id, min_cell_id) = before
        .map(|v| (v.batteries, v.max_cell_id, v.min_cell_id))
        .unwrap_or_default();
    let refs = bank.batteries();
    batteries.truncate(refs.len());
    for (k, &b) in refs.iter().enumerate() {
        match batteries.get_mut(k) {
            Some(slot) => *slot = battery_reusing(b, Buffers::taken_from(slot)),
            None => batteries.push(battery_reusing(b, Buffers::default())),
        }
    }
    BankView {
        batteries,
        cells_per_battery: bank.cells_per_battery(),
        batteries_expected: bank.batteries_expected(),
        batteries_online: bank.batteries_online(),
        voltage_v: bank.voltage_v(),
        current_a: bank.current_a(),
        power_w: bank.power_w(),
        installed_capacity_ah: bank.installed_capacity_ah(),
        soc_pct: bank.soc_pct(),
        charge_ah: bank.charge_ah(),
        max_cell_voltage_v: bank.max_cell_voltage_v(),
        max_cell_id: copied_opt(max_cell_id, bank.max_cell_id()),
        min_cell_voltage_v: bank.min_cell_voltage_v(),
        min_cell_id: copied_opt(min_cell_id, bank.min_cell_id()),
        modules_blocking_charge: bank.modules_blocking_charge(),
        modules_blocking_discharge: bank.modules_blocking_discharge(),
        date: bank.date(),
        dt_s: bank.dt_s(),
    }
}

/// The texts and cell list of a battery's view, filled again for the next (without an
/// allocation when the new ones fit).
#[derive(Default)]
struct Buffers {
    name: RString,
    service: RString,
    cells: RVec<ROption<f64>>,
    charge_mode: ROption<RString>,
}

impl Buffers {
    fn taken_from(view: &mut BatteryView) -> Buffers {
        Buffers {
            name: std::mem::take(&mut view.name),
            service: std::mem::take(&mut view.service),
            cells: std::mem::take(&mut view.cell_voltages_v),
            charge_mode: std::mem::take(&mut view.charge_mode),
        }
    }
}

/// `from` in `into`'s allocation.
fn copied(mut into: RString, from: RStr<'_>) -> RString {
    into.clear();
    into.push_str(from.as_str());
    into
}

fn copied_opt(into: ROption<RString>, from: ROption<RStr<'_>>) -> ROption<RString> {
    from.map(|from| copied(into.into_option().unwrap_or_default(), from))
}

fn battery_reusing(b: BatteryRef<'_>, reuse: Buffers) -> BatteryView {
    let mut cells = reuse.cells;
    cells.clear();
    cells.extend_from_slice(b.cell_voltages_v().as_slice());
    BatteryView {
        name: copied(reuse.name, b.name()),
        service: copied(reuse.service, b.service()),
        state: b.state().clone(),
        voltage_v: b.voltage_v(),
        current_a: b.current_a(),
        power_w: b.power_w(),
        voltages_sum_v: b.voltages_sum_v(),
        installed_capacity_ah: b.installed_capacity_ah(),
        soc_pct: b.soc_pct(),
        max_cell_voltage_v: b.max_cell_voltage_v(),
        min_cell_voltage_v: b.min_cell_voltage_v(),
        cell_voltages_v: cells,
        modules_blocking_charge: b.modules_blocking_charge(),
        modules_blocking_discharge: b.modules_blocking_discharge(),
        allow_to_charge: b.allow_to_charge(),
        allow_to_discharge: b.allow_to_discharge(),
        max_charge_voltage_v: b.max_charge_voltage_v(),
        max_charge_current_a: b.max_charge_current_a(),
        max_discharge_current_a: b.max_discharge_current_a(),
        charge_mode: copied_opt(reuse.charge_mode, b.charge_mode()),
    }
}

/// Lends `inputs` to `then` as they cross the ABI (the host's side).
pub fn with_inputs_ref<Out>(
    inputs: &CurrentInputs,
    then: impl FnOnce(InputsRef<'_>) -> Out,
) -> Out {
    fn vebus(v: &VebusView) -> WithMetadata<VebusAbi<'_>> {
        WithMetadata::new(VebusAbi {
            service: v.service.as_rstr(),
            connected: v.connected,
            current_a: v.current_a,
        })
    }
    fn solar(s: &SolarChargerView) -> WithMetadata<SolarChargerAbi<'_>> {
        WithMetadata::new(SolarChargerAbi {
            service: s.service.as_rstr(),
            current_a: s.current_a,
        })
    }
    fn shunt(s: &ShuntView) -> WithMetadata<ShuntAbi<'_>> {
        WithMetadata::new(ShuntAbi {
            service: s.service.as_rstr(),
            class: &s.class,
            device_instance: s.device_instance,
            custom_name: s.custom_name.as_rstr(),
            current_a: s.current_a,
        })
    }
    fn dc(d: &DcSourceView) -> WithMetadata<DcSourceAbi<'_>> {
        WithMetadata::new(DcSourceAbi {
            service: d.service.as_rstr(),
            class: &d.class,
            device_instance: d.device_instance,
            custom_name: d.custom_name.as_rstr(),
            current_a: d.current_a,
        })
    }
    with_refs(
        &inputs.vebus,
        vebus,
        |w| VebusRef(unsafe { w.as_prefix() }),
        |vebus| {
            with_refs(
                &inputs.solar_chargers,
                solar,
                |w| SolarChargerRef(unsafe { w.as_prefix() }),
                |solar_chargers| {
                    with_refs(
                        &inputs.smartshunts,
                        shunt,
                        |w| ShuntRef(unsafe { w.as_prefix() }),
                        |smartshunts| {
                            with_refs(
                                &inputs.dc_sources,
                                dc,
                                |w| DcSourceRef(unsafe { w.as_prefix() }),
                                |dc_sources| {
                                    let abi = WithMetadata::new(InputsAbi {
                                        bms_current_a: inputs.bms_current_a,
                                        bms_power_w: inputs.bms_power_w,
                                        bank_voltage_v: inputs.bank_voltage_v,
                                        vebus: RSlice::from_slice(vebus),
                                        solar_chargers: RSlice::from_slice(solar_chargers),
                                        smartshunts: RSlice::from_slice(smartshunts),
                                        dc_sources: RSlice::from_slice(dc_sources),
                                    });
                                    then(InputsRef(unsafe { abi.as_prefix() }))
                                },
                            )
                        },
                    )
                },
            )
        },
    )
}

/// The plain view of a current source's inputs that crossed the ABI (the plugin's side).
pub fn inputs_from_ref(inputs: InputsRef<'_>) -> CurrentInputs {
    CurrentInputs {
        bms_current_a: inputs.bms_current_a(),
        bms_power_w: inputs.bms_power_w(),
        bank_voltage_v: inputs.bank_voltage_v(),
        vebus: inputs
            .vebus()
            .iter()
            .map(|v| VebusView {
                service: v.service().into(),
                connected: v.connected(),
                current_a: v.current_a(),
            })
            .collect(),
        solar_chargers: inputs
            .solar_chargers()
            .iter()
            .map(|s| SolarChargerView {
                service: s.service().into(),
                current_a: s.current_a(),
            })
            .collect(),
        smartshunts: inputs
            .smartshunts()
            .iter()
            .map(|s| ShuntView {
                service: s.service().into(),
                class: s.class().clone(),
                device_instance: s.device_instance(),
                custom_name: s.custom_name().into(),
                current_a: s.current_a(),
            })
            .collect(),
        dc_sources: inputs
            .dc_sources()
            .iter()
            .map(|d| DcSourceView {
                service: d.service().into(),
                class: d.class().clone(),
                device_instance: d.device_instance(),
                custom_name: d.custom_name().into(),
                current_a: d.current_a(),
            })
            .collect(),
    }
}

impl From<StrategyOutput> for OutputAbi {
    fn from(out: StrategyOutput) -> Self {
        OutputAbi {
            cvl_v: out.cvl_v,
            ccl_a: out.ccl_a,
            dcl_a: out.dcl_a,
            soc_reset: SocReset_NE::new(out.soc_reset),
            feed_in: FeedInRequest_NE::new(out.feed_in),
            mode: out.mode,
            state_changed: out.state_changed,
        }
    }
}

impl TryFrom<OutputAbi> for StrategyOutput {
    type Error = String;

    /// Fails for a request this build does not know (a plugin is never newer than its host,
    /// so only a corrupt value gets here).
    fn try_from(out: OutputAbi) -> Result<Self, String> {
        let soc_reset: SocReset = *out
            .soc_reset
            .as_enum()
            .map_err(|_| "an unknown counter reset request".to_string())?;
        let feed_in: FeedInRequest = *out
            .feed_in
            .as_enum()
            .map_err(|_| "an unknown feed-in request".to_string())?;
        Ok(StrategyOutput {
            cvl_v: out.cvl_v,
            ccl_a: out.ccl_a,
            dcl_a: out.dcl_a,
            soc_reset,
            feed_in,
            mode: out.mode,
            state_changed: out.state_changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatteryState;
    use abi_stable::std_types::{RNone, RSome};

    fn battery(name: &str, cells: usize, mode: Option<&str>) -> BatteryView {
        BatteryView {
            name: name.into(),
            service: format!("com.victronenergy.battery.{name}").into(),
            state: BatteryState_NE::new(BatteryState::Online),
            voltage_v: 53.1,
            current_a: cells as f64,
            power_w: 10.0,
            voltages_sum_v: RSome(53.0),
            installed_capacity_ah: RNone,
            soc_pct: RSome(50.0),
            max_cell_voltage_v: RSome(3.4),
            min_cell_voltage_v: RNone,
            cell_voltages_v: (0..cells).map(|k| RSome(3.3 + k as f64 / 100.0)).collect(),
            modules_blocking_charge: 0,
            modules_blocking_discharge: 1,
            allow_to_charge: RSome(1),
            allow_to_discharge: RNone,
            max_charge_voltage_v: RSome(55.2),
            max_charge_current_a: RNone,
            max_discharge_current_a: RSome(100.0),
            charge_mode: mode.map(RString::from).into(),
        }
    }

    fn bank(batteries: Vec<BatteryView>, max_id: Option<&str>) -> BankView {
        BankView {
            batteries: batteries.into(),
            cells_per_battery: 16,
            batteries_expected: 3,
            batteries_online: 2,
            voltage_v: 53.0,
            current_a: -4.0,
            power_w: -212.0,
            installed_capacity_ah: 280.0,
            soc_pct: RSome(61.0),
            charge_ah: RNone,
            max_cell_voltage_v: RSome(3.41),
            max_cell_id: max_id.map(RString::from).into(),
            min_cell_voltage_v: RNone,
            min_cell_id: RSome("B_Cell2".into()),
            modules_blocking_charge: 0,
            modules_blocking_discharge: 1,
            date: LocalDate {
                year: 2026,
                month: 12,
                day: 6,
            },
            dt_s: 1.0,
        }
    }

    #[test]
    fn a_refilled_bank_is_the_bank_the_host_lent() {
        let ticks = [
            bank(
                vec![battery("A", 16, Some("Bulk")), battery("B", 16, None)],
                Some("A_Cell3"),
            ),
            // A battery more, another name, fewer cells, texts that come and go.
            bank(
                vec![
                    battery("A", 15, None),
                    battery("Bb", 16, Some("Absorption")),
                    battery("C", 4, Some("Float")),
                ],
                None,
            ),
            bank(vec![battery("C", 16, Some("Float"))], Some("C_Cell16")),
            bank(vec![], None),
            bank(vec![battery("A", 16, Some("Bulk"))], Some("A_Cell1")),
        ];
        let mut view = None;
        for lent in &ticks {
            let refilled = with_bank_ref(lent, |bank| refill_bank(&mut view, bank).clone());
            assert_eq!(&refilled, lent);
            assert_eq!(with_bank_ref(lent, bank_from_ref), *lent);
        }
    }
}

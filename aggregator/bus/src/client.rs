//! Calls to other services: the bus daemon (`ListNames`, `GetNameOwner`), any BusItem service
//! (`GetItems`, `GetValue`, `SetValue`) and localsettings (`AddSettings`, docs/venus.md §7).
//! Every call has a time limit, so a service that hangs cannot stall the daemon; a call made
//! from the tick runs as a [`Background`] call, whose answer a later tick picks up.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::{OwnedValue, Value as Wire};
use zbus::Connection;

use crate::export::BUS_ITEM;
use crate::variant::{to_wire, Field};
use aggregator_core::value::Value;

/// Longest wait for one answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings service.
pub const SETTINGS: &str = "com.victronenergy.settings";

async fn call<B>(
    conn: &Connection,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    body: &B,
) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let call = conn.call_method(Some(destination), path, Some(interface), member, body);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(zbus::Error::Failure(format!(
            "{destination} {path} {member}: no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// A call running on its own task: started without waiting, its answer picked up by a later
/// tick. The tick never waits for another service, so one that does not answer (or answers
/// only at [`CALL_TIMEOUT`]) delays that call alone, never the limits published meanwhile.
#[derive(Debug)]
pub struct Background<T> {
    answer: tokio::sync::oneshot::Receiver<T>,
}

impl<T: Send + 'static> Background<T> {
    /// Starts `call` on the runtime; it runs while the tick's task waits for its timer.
    pub fn start<F>(call: F) -> Self
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let (tx, answer) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // The receiver may be gone (the daemon stopping): nobody wants the answer then.
            let _ = tx.send(call.await);
        });
        Self { answer }
    }

    /// Waits at most `within` for the answer (`None`: not within it; `Some(None)`: the task
    /// ended without one).
    pub async fn settle(&mut self, within: std::time::Duration) -> Option<Option<T>> {
        tokio::time::timeout(within, &mut self.answer)
            .await
            .ok()
            .map(Result::ok)
    }

    /// The answer once it came; `None` while the call still runs. Its task ending without an
    /// answer (the runtime shutting down) reads as `Some(None)`.
    pub fn answer(&mut self) -> Option<Option<T>> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.answer.try_recv() {
            Ok(answer) => Some(Some(answer)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Closed) => Some(None),
        }
    }
}

/// Every name on the bus.
pub async fn list_names(conn: &Connection) -> zbus::Result<Vec<String>> {
    let reply = call(
        conn,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListNames",
        &(),
    )
    .await?;
    reply.body().deserialize()
}

/// The unique name owning `name`: `None` when the bus says nobody owns it, an error when the
/// bus did not say (a busy bus that did not answer in time is no answer).
pub async fn name_owner(conn: &Connection, name: &str) -> zbus::Result<Option<String>> {
    let reply = call(
        conn,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        &(name,),
    )
    .await;
    match reply {
        Ok(reply) => Ok(Some(reply.body().deserialize::<String>()?)),
        Err(zbus::Error::MethodError(error, _, _))
            if error.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// All items of a service: `GetItems` on `/`, or the older `GetValue` on `/` (relative keys)
/// when the service has no `GetItems`.
pub async fn get_items(conn: &Connection, service: &str) -> zbus::Result<HashMap<String, Field>> {
    match call(conn, service, "/", BUS_ITEM, "GetItems", &()).await {
        Ok(reply) => {
            let items: HashMap<String, HashMap<String, OwnedValue>> = reply.body().deserialize()?;
            Ok(items
                .into_iter()
                .filter_map(|(path, mut entry)| {
                    let value = entry.remove("Value")?;
                    Some((path, Field::from_owned(&value)))
                })
                .collect())
        }
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            let reply = call(conn, service, "/", BUS_ITEM, "GetValue", &()).await?;
            let all: OwnedValue = reply.body().deserialize()?;
            let map: HashMap<String, OwnedValue> = HashMap::try_from(all)?;
            Ok(map
                .into_iter()
                .map(|(rel, value)| (format!("/{rel}"), Field::from_owned(&value)))
                .collect())
        }
        Err(err) => Err(err),
    }
}

/// One item's value.
pub async fn get_value(conn: &Connection, service: &str, path: &str) -> zbus::Result<Field> {
    let reply = call(conn, service, path, BUS_ITEM, "GetValue", &()).await?;
    let value: OwnedValue = reply.body().deserialize()?;
    Ok(Field::from_owned(&value))
}

/// `SetValue`; the service's answer (0 = accepted).
pub async fn set_value(
    conn: &Connection,
    service: &str,
    path: &str,
    value: &Value,
) -> zbus::Result<i32> {
    let reply = call(conn, service, path, BUS_ITEM, "SetValue", &to_wire(value)).await?;
    reply.body().deserialize()
}

/// One result of `AddSettings`.
#[derive(Clone, Debug, PartialEq)]
pub struct Added {
    /// The path as given.
    pub path: String,
    /// 0, or a localsettings error code.
    pub error: i32,
    /// The stored value when `error` is 0.
    pub value: Option<Field>,
}

/// `AddSettings` on a settings group (e.g. `/Settings/Devices`): creates what is missing with
/// its default and returns the stored values.
pub async fn add_settings(
    conn: &Connection,
    group: &str,
    settings: &[(&str, Value)],
) -> zbus::Result<Vec<Added>> {
    let request: Vec<HashMap<&str, Wire<'static>>> = settings
        .iter()
        .map(|(path, default)| {
            HashMap::from([
                ("path", Wire::from(path.to_string())),
                ("default", to_wire(default)),
            ])
        })
        .collect();
    let reply = call(
        conn,
        SETTINGS,
        group,
        "com.victronenergy.Settings",
        "AddSettings",
        &(request,),
    )
    .await?;
    let results: Vec<HashMap<String, OwnedValue>> = reply.body().deserialize()?;
    Ok(results
        .into_iter()
        .map(|mut r| Added {
            path: r
                .remove("path")
                .and_then(|v| String::try_from(v).ok())
                .unwrap_or_default(),
            error: r
                .remove("error")
                .and_then(|v| Field::from_owned(&v).integer())
                .map_or(-1, |e| e as i32),
            value: r.remove("value").map(|v| Field::from_owned(&v)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn settle_waits_for_an_answer_within_its_time_only() {
        let mut soon = Background::start(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        });
        assert_eq!(soon.settle(Duration::from_secs(5)).await, Some(Some(7)));
        let mut never = Background::start(std::future::pending::<i32>());
        assert_eq!(never.settle(Duration::from_millis(20)).await, None);
        assert_eq!(never.answer(), None, "still running");
    }
}

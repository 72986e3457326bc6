//! One simulated service on its own bus connection, as a separate Venus program would be:
//! registered the velib way (every path first, then the name, docs/venus.md §5), publishing
//! changes as `PropertiesChanged` or `ItemsChanged`, and able to leave the bus and come back
//! with a new connection (a restarted driver).

use std::collections::BTreeSet;

use crate::battery::Item;
use crate::scenario::Signals;
use crate::Error;
use venus_bus::export::BusItemService;
use venus_bus::{connect_to, release_name, request_name};

/// Prepares a service's table before it is served (installs handlers).
pub(crate) type Setup = Box<dyn Fn(&BusItemService) + Send + Sync>;

/// A service while it is on the bus.
struct Live {
    exported: BusItemService,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The server task holds the connection; without it the connection closes on drop.
        self.server.abort();
    }
}

/// A simulated service: its name, and its connection while it is on the bus.
pub(crate) struct Service {
    name: String,
    address: String,
    writeable: bool,
    setup: Option<Setup>,
    live: Option<Live>,
    /// The paths published last, so that one no longer published (a raw override that
    /// ended) is removed.
    published: BTreeSet<String>,
}

impl Service {
    /// A service named `name` on the bus at `address`, not yet registered. `writeable`: every
    /// path accepts `SetValue` (the settings); `setup` runs on every new connection.
    pub(crate) fn new(name: String, address: &str, writeable: bool, setup: Option<Setup>) -> Self {
        Service {
            name,
            address: address.to_string(),
            writeable,
            setup,
            live: None,
            published: BTreeSet::new(),
        }
    }

    /// Whether it is on the bus.
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Connects, inserts every item, serves, then requests the name.
    pub(crate) async fn register(&mut self, items: Vec<Item>) -> Result<(), Error> {
        let failed = |doing: Option<String>, source: venus_bus::Error| Error::Service {
            name: self.name.clone(),
            doing,
            source: Box::new(source),
        };
        let conn = connect_to(&self.address).await.map_err(|err| {
            failed(
                Some(format!("cannot connect to {}", self.address)),
                err.into(),
            )
        })?;
        let exported = BusItemService::new(conn);
        if let Some(setup) = &self.setup {
            setup(&exported);
        }
        self.published = items.iter().map(|(path, _, _)| path.clone()).collect();
        for (path, value, text) in items {
            exported.insert(&path, value, text, self.writeable);
        }
        let server = exported
            .serve()
            .await
            .map_err(|err| failed(Some("cannot serve".into()), err.into()))?;
        let live = Live { exported, server };
        request_name(live.exported.connection(), &self.name)
            .await
            .map_err(|err| failed(None, err))?;
        self.live = Some(live);
        Ok(())
    }

    /// Leaves the bus: gives the name back and closes the connection.
    pub(crate) async fn unregister(&mut self) {
        let Some(live) = self.live.take() else {
            return;
        };
        live.server.abort();
        let conn = live.exported.connection().clone();
        if let Err(err) = release_name(&conn, &self.name).await {
            tracing::debug!("{}: releasing the name failed: {err}", self.name);
        }
        drop(live);
        if let Err(err) = conn.close().await {
            tracing::debug!("{}: closing the connection failed: {err}", self.name);
        }
    }

    /// Stores the items and signals what changed. A path published before and missing now is
    /// removed without a signal, as velib deletes a path.
    pub(crate) async fn publish(&mut self, items: Vec<Item>, signals: Signals) {
        let Some(live) = &self.live else {
            return;
        };
        let published: BTreeSet<String> = items.iter().map(|(path, _, _)| path.clone()).collect();
        for ended in self.published.difference(&published) {
            live.exported.remove(ended);
        }
        self.published = published;
        let changed = live.exported.store(items);
        let sent = match signals {
            Signals::Items => live.exported.items_changed(&changed).await,
            Signals::Properties => {
                let mut result = Ok(());
                for path in &changed {
                    result = result.and(live.exported.properties_changed(path).await);
                }
                result
            }
        };
        if let Err(err) = sent {
            tracing::debug!("{}: signal not sent: {err}", self.name);
        }
    }
}

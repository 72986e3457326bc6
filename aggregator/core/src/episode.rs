//! Episodes: a condition that lasts over ticks is said when it starts (and, where that
//! matters, when it ends), never once per tick. A device logs to a small flash: a bad value
//! that lasts a day must cost two lines, not 86,400.

use std::collections::BTreeSet;

/// The start or the end of an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The condition holds this tick and did not the tick before.
    Started,
    /// The condition held the tick before and does not now.
    Ended,
}

/// One condition, and whether it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Episode {
    on: bool,
}

impl Episode {
    /// The condition holds: true when it did not before (the one time to say it).
    pub fn start(&mut self) -> bool {
        !std::mem::replace(&mut self.on, true)
    }

    /// The condition is over: true when it held (the one time to say it ended). A condition
    /// said once for the daemon's whole run is simply never ended.
    pub fn end(&mut self) -> bool {
        std::mem::replace(&mut self.on, false)
    }

    /// Follows whether the condition holds this tick: its start or end, if this tick is one.
    pub fn follow(&mut self, holds: bool) -> Option<Edge> {
        match (holds, std::mem::replace(&mut self.on, holds)) {
            (true, false) => Some(Edge::Started),
            (false, true) => Some(Edge::Ended),
            _ => None,
        }
    }

    /// Whether the condition holds.
    pub fn holds(&self) -> bool {
        self.on
    }
}

/// The same condition for each of several names (batteries): one episode per name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Episodes {
    on: BTreeSet<String>,
}

impl Episodes {
    /// The condition holds for `name`: true when it did not before.
    pub fn start(&mut self, name: &str) -> bool {
        // Checked first: the name is copied only on the one tick it is said.
        !self.on.contains(name) && self.on.insert(name.to_string())
    }

    /// The condition is over for `name`: true when it held.
    pub fn end(&mut self, name: &str) -> bool {
        self.on.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_said_when_it_starts_and_when_it_ends_never_in_between() {
        let mut e = Episode::default();
        assert_eq!(e.follow(false), None);
        assert_eq!(e.follow(true), Some(Edge::Started));
        assert_eq!(e.follow(true), None);
        assert!(e.holds());
        assert_eq!(e.follow(false), Some(Edge::Ended));
        assert_eq!(e.follow(false), None);
        assert!(e.start());
        assert!(!e.start(), "started once");
        assert!(e.end());
        assert!(!e.end(), "ended once");
    }

    #[test]
    fn each_name_has_its_own_episode() {
        let mut e = Episodes::default();
        assert!(e.start("A"));
        assert!(!e.start("A"));
        assert!(e.start("B"));
        assert!(e.end("A"));
        assert!(!e.end("A"));
        assert!(e.start("A"), "a new episode");
        assert!(!e.start("B"));
    }
}

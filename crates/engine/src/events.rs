//! `docker events`: what happened to containers, images and volumes, as it happens.
//!
//! Every event goes to a broadcast channel (live subscribers) and to a bounded ring of the
//! most recent ones ([`RING`]), so that a client asking `since` a moment ago gets them
//! replayed. As in Docker (daemon/events: a buffer of the last 256), events live in memory
//! only: the ring is not persisted, a daemon restart starts it empty, and `since` reaches no
//! further back than the ring. `since` and `until` select from the ring (Docker's
//! `loadBufferedEvents`): with either one given, the remembered events at or after `since`
//! and at or before `until` are replayed; with neither, only live events follow. The front
//! end closes the stream once `until` has passed.
//!
//! The engine emits them where the work is done: container events from the life cycle,
//! image events from the image operations in `images.rs`, volume events from `volumes.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::container::ContainerRecord;
use crate::error::{EngineError, Result};

/// How many past events `since` can replay (Docker keeps 256).
pub const RING: usize = 1000;

/// One event, as the Docker API's `EventMessage` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `container`, `image` or `volume`.
    pub typ: &'static str,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: i64,
}

impl Event {
    pub fn new(typ: &'static str, action: impl Into<String>, actor_id: impl Into<String>) -> Event {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Event {
            typ,
            action: action.into(),
            actor_id: actor_id.into(),
            attributes: BTreeMap::new(),
            time_nano,
        }
    }

    /// A container event with Docker's attributes: the labels, `image` and `name`.
    pub fn container(rec: &ContainerRecord, action: impl Into<String>) -> Event {
        let mut ev = Event::new("container", action, rec.id.clone());
        ev.attributes = rec.config.labels.clone().into_iter().collect();
        ev.attributes.insert("image".into(), rec.image_ref.clone());
        ev.attributes.insert("name".into(), rec.name.clone());
        ev
    }

    /// An image event as moby's `LogImageEvent` makes it: the image's labels, then `name`.
    pub fn image(
        action: &str,
        id: impl Into<String>,
        name: impl Into<String>,
        labels: BTreeMap<String, String>,
    ) -> Event {
        let mut ev = Event::new("image", action, id);
        ev.attributes = labels;
        ev.attributes.insert("name".into(), name.into());
        ev
    }

    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Event {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// The engine's event hub.
pub struct EventHub {
    tx: broadcast::Sender<Event>,
    ring: Mutex<VecDeque<Event>>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(256).0,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
        }
    }
}

impl EventHub {
    pub fn emit(&self, ev: Event) {
        tracing::debug!(typ = ev.typ, action = %ev.action, id = %ev.actor_id, "event");
        // Under the ring's lock, so a subscriber sees each event exactly once: either in
        // its replay or on its receiver.
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// The remembered events at or after `since_nano` and at or before `until_nano` (none
    /// when neither is given), and a receiver of those that follow.
    pub fn subscribe(
        &self,
        since_nano: Option<i64>,
        until_nano: Option<i64>,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let past = if since_nano.is_none() && until_nano.is_none() {
            Vec::new()
        } else {
            let (since, until) = (
                since_nano.unwrap_or(i64::MIN),
                until_nano.unwrap_or(i64::MAX),
            );
            ring.iter()
                .filter(|e| (since..=until).contains(&e.time_nano))
                .cloned()
                .collect()
        };
        (past, rx)
    }
}

impl crate::Engine {
    /// Publishes `ev` to `docker events`.
    pub fn emit(&self, ev: Event) {
        self.inner.events.emit(ev);
    }
}

/// The `filters` of `GET /events`: values of one key are alternatives, keys all apply.
#[derive(Debug, Default)]
pub struct EventFilter {
    filters: BTreeMap<String, Vec<String>>,
}

impl EventFilter {
    pub fn new(filters: BTreeMap<String, Vec<String>>) -> Result<EventFilter> {
        for key in filters.keys() {
            if !matches!(
                key.as_str(),
                "type" | "container" | "image" | "event" | "action" | "label" | "volume"
            ) {
                return Err(EngineError::InvalidParameter(format!(
                    "invalid filter '{key}': events filter on type, container, image, event, label and volume"
                )));
            }
        }
        Ok(EventFilter { filters })
    }

    pub fn matches(&self, ev: &Event) -> bool {
        self.filters.iter().all(|(key, values)| {
            values.is_empty() || values.iter().any(|v| Self::matches_one(ev, key, v))
        })
    }

    fn matches_one(ev: &Event, key: &str, v: &str) -> bool {
        let attr = |k: &str| ev.attributes.get(k).map(String::as_str);
        match key {
            "type" => ev.typ == v,
            "event" | "action" => {
                // `exec_start: sh -c ...` matches `exec_start`, as Docker does.
                ev.action == v || ev.action.split(':').next() == Some(v)
            }
            "container" => {
                ev.typ == "container"
                    && (ev.actor_id.starts_with(v)
                        || attr("name") == Some(v.trim_start_matches('/')))
            }
            // Docker's matchImage: the actor or its image name, with or without the tag.
            "image" => {
                let name = match ev.typ {
                    "image" => attr("name"),
                    "container" => attr("image"),
                    _ => return false,
                };
                let ids = [Some(ev.actor_id.as_str()), name];
                ids.into_iter()
                    .flatten()
                    .any(|s| s == v || strip_tag(s) == v)
                    || (ev.typ == "image" && ev.actor_id.starts_with(&format!("sha256:{v}")))
            }
            "volume" => ev.typ == "volume" && ev.actor_id == v,
            "label" => match v.split_once('=') {
                Some((k, val)) => attr(k) == Some(val),
                None => ev.attributes.contains_key(v),
            },
            _ => false,
        }
    }
}

/// `alpine:3` -> `alpine`; what does not parse as a reference stays as it is.
fn strip_tag(s: &str) -> String {
    berth_image::Reference::parse_name_only(s).map_or_else(|_| s.to_string(), |r| r.familiar_name())
}

/// A `since`/`until` value: unix seconds (with an optional fraction) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64> {
    if let Some(t) = crate::timefmt::parse_rfc3339(s) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || {
        EngineError::InvalidParameter(format!(
            "invalid time '{s}': give unix seconds (e.g. 1700000000) or RFC 3339 (e.g. 2024-01-02T03:04:05Z)"
        ))
    };
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    Ok(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pairs: &[(&str, &str)]) -> EventFilter {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        EventFilter::new(m).unwrap()
    }

    fn start() -> Event {
        Event::new("container", "start", "abcdef0123")
            .attr("name", "web")
            .attr("image", "busybox")
            .attr("tier", "front")
    }

    #[test]
    fn filters_by_type_container_image_event_label() {
        let ev = start();
        assert!(filter(&[]).matches(&ev));
        assert!(filter(&[("type", "container")]).matches(&ev));
        assert!(!filter(&[("type", "image")]).matches(&ev));
        assert!(filter(&[("container", "web")]).matches(&ev));
        assert!(filter(&[("container", "abcdef")]).matches(&ev));
        assert!(!filter(&[("container", "db")]).matches(&ev));
        assert!(filter(&[("image", "busybox")]).matches(&ev));
        assert!(filter(&[("event", "die"), ("event", "start")]).matches(&ev));
        assert!(!filter(&[("event", "die")]).matches(&ev));
        assert!(filter(&[("label", "tier=front")]).matches(&ev));
        assert!(filter(&[("label", "tier")]).matches(&ev));
        assert!(!filter(&[("label", "tier=back")]).matches(&ev));
        // Keys all apply.
        assert!(!filter(&[("container", "web"), ("event", "die")]).matches(&ev));
        let exec = Event::new("container", "exec_start: sh -c true", "abcdef0123");
        assert!(filter(&[("event", "exec_start")]).matches(&exec));
        // Images: by id, id prefix, name, or name without its tag.
        let tag = Event::image("tag", "sha256:abcd", "app:1", BTreeMap::new());
        assert!(filter(&[("image", "sha256:abcd")]).matches(&tag));
        assert!(filter(&[("image", "abc")]).matches(&tag));
        assert!(filter(&[("image", "app:1")]).matches(&tag));
        assert!(filter(&[("image", "app")]).matches(&tag));
        assert!(!filter(&[("image", "other")]).matches(&tag));
        let pull = Event::image("pull", "host:5000/app:1", "host:5000/app", BTreeMap::new());
        assert!(filter(&[("image", "host:5000/app")]).matches(&pull));
        assert!(filter(&[("image", "host:5000/app:1")]).matches(&pull));
        let vol = Event::new("volume", "create", "data");
        assert!(filter(&[("volume", "data")]).matches(&vol));
        assert!(!filter(&[("volume", "data")]).matches(&ev));
    }

    #[test]
    fn unknown_filter_is_refused() {
        let mut m = BTreeMap::new();
        m.insert("colour".to_string(), vec!["red".to_string()]);
        assert!(EventFilter::new(m).is_err());
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("10").unwrap(), 10_000_000_000);
        assert_eq!(parse_time("10.5").unwrap(), 10_500_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:10Z").unwrap(), 10_000_000_000);
        assert!(parse_time("soon").is_err());
        assert!(parse_time("1.x").is_err());
    }

    #[test]
    fn replay_since_and_live() {
        let hub = EventHub::default();
        let old = start();
        hub.emit(old.clone());
        let (past, _) = hub.subscribe(None, None);
        assert!(past.is_empty());
        let (past, mut rx) = hub.subscribe(Some(old.time_nano), None);
        assert_eq!(past, vec![old.clone()]);
        let (past, _) = hub.subscribe(Some(old.time_nano + 1), None);
        assert!(past.is_empty());
        // `until` alone replays what came before it, as Docker does.
        let (past, _) = hub.subscribe(None, Some(old.time_nano));
        assert_eq!(past, vec![old.clone()]);
        let (past, _) = hub.subscribe(None, Some(old.time_nano - 1));
        assert!(past.is_empty());
        let next = Event::new("image", "tag", "sha256:1");
        hub.emit(next.clone());
        assert_eq!(rx.try_recv().unwrap(), next);
    }

    #[test]
    fn ring_is_bounded() {
        let hub = EventHub::default();
        for i in 0..RING + 5 {
            hub.emit(Event::new("volume", "create", format!("v{i}")));
        }
        let (past, _) = hub.subscribe(Some(0), None);
        assert_eq!(past.len(), RING);
        assert_eq!(past[0].actor_id, "v5");
    }
}

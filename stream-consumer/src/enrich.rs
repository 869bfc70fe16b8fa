//! User-agent enrichment: browser, OS, device class and bot flag, parsed once per distinct agent.

use std::sync::Arc;

use dashmap::DashMap;

/// What the lake stores about a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub browser: Option<String>,
    pub os: Option<String>,
    /// `desktop`, `mobile`, `bot`, `appliance` or `other`.
    pub device_class: String,
    pub is_bot: bool,
}

/// Most distinct agents kept across batches; beyond this the cache is cleared rather than
/// grown, since a flood of unique agents (bots) must not grow memory without bound.
const AGENT_CACHE_MAX: usize = 10_000;

/// A process-wide cache, shared by concurrent batches (the local runner polls shards in
/// parallel), so a warm Lambda instance or runner parses each agent once, not once per batch.
#[derive(Clone, Default)]
pub struct AgentCache {
    parsed: Arc<DashMap<String, Arc<AgentFacts>, foldhash::fast::RandomState>>,
}

impl AgentCache {
    /// The facts of each event's agent (`None` for an event without one), parsing the agents
    /// not seen before. Events of one client request sit together in the stream and share an
    /// agent, so the previous event's agent is compared first: most events then cost one string
    /// comparison instead of hashing a 100-byte agent.
    pub fn lookup_all<'a>(&self, agents: impl Iterator<Item = Option<&'a str>>) -> BatchAgents {
        let mut batch = BatchAgents::default();
        let mut index: foldhash::HashMap<&'a str, u32> = foldhash::HashMap::default();
        let mut previous: Option<(&'a str, u32)> = None;
        for agent in agents {
            let Some(agent) = agent else {
                batch.of_event.push(None);
                continue;
            };
            let slot = match previous {
                Some((p, slot)) if p == agent => slot,
                _ => *index.entry(agent).or_insert_with(|| {
                    batch.distinct.push(self.facts(agent));
                    (batch.distinct.len() - 1) as u32
                }),
            };
            previous = Some((agent, slot));
            batch.of_event.push(Some(slot));
        }
        batch
    }

    /// One agent's facts, from the process-wide cache or parsed now.
    fn facts(&self, agent: &str) -> Arc<AgentFacts> {
        if let Some(f) = self.parsed.get(agent) {
            return f.clone();
        }
        let f = Arc::new(parse_agent(agent));
        if self.parsed.len() >= AGENT_CACHE_MAX {
            self.parsed.clear();
        }
        self.parsed.insert(agent.to_owned(), f.clone());
        f
    }
}

/// The agent facts of a batch's events, by event index (see [`AgentCache::lookup_all`]).
#[derive(Debug, Default)]
pub struct BatchAgents {
    distinct: Vec<Arc<AgentFacts>>,
    of_event: Vec<Option<u32>>,
}

impl BatchAgents {
    /// The facts of event `event`'s agent.
    pub fn get(&self, event: usize) -> Option<&AgentFacts> {
        self.of_event.get(event).copied().flatten().map(|slot| self.distinct[slot as usize].as_ref())
    }

    /// How many distinct agents the batch has.
    pub fn distinct(&self) -> usize {
        self.distinct.len()
    }
}

/// Parses one agent with `woothee` (a maintained port of the woothee project's shared rules).
pub fn parse_agent(agent: &str) -> AgentFacts {
    let parsed = woothee::parser::Parser::new().parse(agent);
    let known = |s: &str| (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_owned());
    match parsed {
        None => AgentFacts { browser: None, os: None, device_class: "other".into(), is_bot: false },
        Some(r) => {
            let is_bot = r.category == "crawler";
            let device_class = match r.category {
                "pc" => "desktop",
                "smartphone" | "mobilephone" => "mobile",
                "crawler" => "bot",
                "appliance" => "appliance",
                _ => "other",
            };
            AgentFacts { browser: known(r.name), os: known(r.os), device_class: device_class.into(), is_bot }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_agents() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ("Chrome", "Windows 10", "desktop", false),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "iPhone", "mobile", false),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                ("Googlebot", "", "bot", true),
            ),
        ];
        for (ua, (browser, os, class, bot)) in cases {
            let f = parse_agent(ua);
            assert_eq!(f.browser.as_deref(), Some(browser), "{ua}");
            assert_eq!(f.os.as_deref().unwrap_or(""), os, "{ua}");
            assert_eq!(f.device_class, class, "{ua}");
            assert_eq!(f.is_bot, bot, "{ua}");
        }
        assert_eq!(parse_agent("").device_class, "other");
    }

    /// Invariant: each distinct agent is parsed once per process, and every event gets the
    /// facts of its own agent, whether it repeats the previous event's agent or an older one.
    #[test]
    fn cache_parses_each_agent_once_and_answers_per_event() {
        let (chrome, bot) = (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        );
        let cache = AgentCache::default();
        let agents = [Some(chrome), Some(chrome), None, Some(bot), Some(chrome)];
        let got = cache.lookup_all(agents.into_iter());
        assert_eq!(got.distinct(), 2);
        assert_eq!(cache.parsed.len(), 2);
        let bots: Vec<Option<bool>> = (0..agents.len()).map(|i| got.get(i).map(|f| f.is_bot)).collect();
        assert_eq!(bots, [Some(false), Some(false), None, Some(true), Some(false)]);
        assert_eq!(got.get(agents.len()).map(|f| f.is_bot), None, "past the end");
        let again = cache.lookup_all([Some(bot)].into_iter());
        assert!(Arc::ptr_eq(&again.distinct[0], &got.distinct[1]), "a later batch reuses the parsed facts");
    }
}

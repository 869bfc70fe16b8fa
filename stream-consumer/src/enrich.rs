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
    /// Facts for every distinct agent in `agents`, parsing the ones not seen before.
    pub fn lookup_all<'a>(&self, agents: impl Iterator<Item = &'a str>) -> foldhash::HashMap<&'a str, Arc<AgentFacts>> {
        let mut out = foldhash::HashMap::default();
        for agent in agents {
            if out.contains_key(agent) {
                continue;
            }
            let facts = match self.parsed.get(agent) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(parse_agent(agent));
                    if self.parsed.len() >= AGENT_CACHE_MAX {
                        self.parsed.clear();
                    }
                    self.parsed.insert(agent.to_owned(), f.clone());
                    f
                }
            };
            out.insert(agent, facts);
        }
        out
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

    #[test]
    fn cache_parses_each_agent_once() {
        let cache = AgentCache::default();
        let got = cache.lookup_all(["a", "b", "a"].into_iter());
        assert_eq!(got.len(), 2);
        assert_eq!(cache.parsed.len(), 2);
    }
}

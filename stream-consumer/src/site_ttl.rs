//! How long a site's DynamoDB items live: a per-site `dynamodb_ttl_days` from the sites file, else `DYNAMODB_TTL_DAYS`.
//!
//! The consumer reads the same sites file as the producer (`SITES_JSON` text, or the file at
//! `SITES_CONFIG`), but only each site's `id` and optional `dynamodb_ttl_days`: the producer
//! owns the file's validation, and on AWS Terraform hands the consumer just those two fields.

use std::collections::HashMap;

use serde::Deserialize;

/// The item lifetime of every site, in days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteTtl {
    /// `DYNAMODB_TTL_DAYS`: sites without their own setting, and events without a site.
    pub default_days: u32,
    /// Sites with their own `dynamodb_ttl_days`.
    pub per_site: HashMap<String, u32>,
}

#[derive(Deserialize)]
struct SitesFile {
    sites: Vec<SiteEntry>,
}

#[derive(Deserialize)]
struct SiteEntry {
    id: String,
    #[serde(default)]
    dynamodb_ttl_days: Option<u32>,
}

impl SiteTtl {
    /// Every site lives `default_days`.
    pub fn uniform(default_days: u32) -> Self {
        SiteTtl { default_days, per_site: HashMap::new() }
    }

    /// The per-site lifetimes of a sites file's text (`{"sites": [{"id", "dynamodb_ttl_days"?, …}]}`);
    /// other fields are the producer's and ignored. A lifetime of 0 days is refused: the item
    /// would be born expired.
    pub fn from_sites_json(text: &str, default_days: u32) -> Result<Self, String> {
        let file: SitesFile = serde_json::from_str(text).map_err(|e| format!("not a sites file: {e}"))?;
        let mut per_site = HashMap::new();
        for site in file.sites {
            if let Some(days) = site.dynamodb_ttl_days {
                if days == 0 {
                    return Err(format!("site {}: dynamodb_ttl_days must be at least 1", site.id));
                }
                per_site.insert(site.id, days);
            }
        }
        Ok(SiteTtl { default_days, per_site })
    }

    /// The lifetime of an event of `site`.
    #[inline]
    pub fn days_for(&self, site: Option<&str>) -> u32 {
        site.and_then(|s| self.per_site.get(s)).copied().unwrap_or(self.default_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_uses_its_own_lifetime_and_others_the_default() {
        let text = r#"{"sites": [
            {"id": "shop", "key": "pk_shop", "allowed_origins": [], "dynamodb_ttl_days": 7},
            {"id": "blog", "key": "pk_blog", "dynamodb_ttl_days": null},
            {"id": "docs"}
        ]}"#;
        let ttl = SiteTtl::from_sites_json(text, 30).unwrap();
        let cases = [(Some("shop"), 7), (Some("blog"), 30), (Some("docs"), 30), (Some("unknown"), 30), (None, 30)];
        for (site, days) in cases {
            assert_eq!(ttl.days_for(site), days, "{site:?}");
        }
        assert_eq!(SiteTtl::uniform(14).days_for(Some("shop")), 14);
    }

    #[test]
    fn bad_files_and_zero_days_are_refused() {
        assert!(SiteTtl::from_sites_json("{}", 30).is_err());
        assert!(SiteTtl::from_sites_json("not json", 30).is_err());
        let zero = SiteTtl::from_sites_json(r#"{"sites": [{"id": "a", "dynamodb_ttl_days": 0}]}"#, 30).unwrap_err();
        assert!(zero.contains("site a"), "{zero}");
        assert!(SiteTtl::from_sites_json(r#"{"sites": [{"id": "a", "dynamodb_ttl_days": -1}]}"#, 30).is_err());
    }

    /// The shipped local sites file is one the consumer reads.
    #[test]
    fn the_local_sites_file_reads() {
        let text = include_str!("../../config/sites.json");
        let ttl = SiteTtl::from_sites_json(text, 30).unwrap();
        assert!(ttl.days_for(Some("local-demo")) >= 1);
    }
}

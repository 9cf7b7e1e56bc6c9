//! Skill labels from a file the operator configures (`[programme] skill_labels`): CSV with a
//! header, the skill URI in the first column (`uri`, or ESCO's `conceptUri`) and one column
//! per language (`en`, `nl`, …; ESCO's `preferredLabel` is English). A label from the file
//! wins over one a statement's context gave.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Skill URI -> language map.
#[derive(Debug, Clone, Default)]
pub struct SkillLabels(Arc<HashMap<String, Value>>);

impl SkillLabels {
    pub fn load(path: &Path) -> Result<SkillLabels, String> {
        let file = std::fs::File::open(path)
            .map_err(|err| format!("skill label file {}: {err}", path.display()))?;
        Self::read(file).map_err(|err| format!("skill label file {}: {err}", path.display()))
    }

    pub fn read(input: impl std::io::Read) -> Result<SkillLabels, String> {
        let mut reader = csv::Reader::from_reader(input);
        let header = reader
            .headers()
            .map_err(|err| format!("header: {err}"))?
            .clone();
        if header.len() < 2 {
            return Err("the header needs the URI column and at least one language column".into());
        }
        let languages: Vec<String> = header
            .iter()
            .skip(1)
            .map(|name| match name.trim() {
                "preferredLabel" => "en".to_owned(),
                other => other.to_owned(),
            })
            .collect();
        let mut labels = HashMap::new();
        for (index, record) in reader.records().enumerate() {
            let line = index + 2;
            let record = record.map_err(|err| format!("line {line}: {err}"))?;
            let uri = record.get(0).unwrap_or_default().trim();
            if uri.is_empty() {
                return Err(format!("line {line}: the skill URI is empty"));
            }
            let mut names = Map::new();
            for (language, text) in languages.iter().zip(record.iter().skip(1)) {
                if !text.trim().is_empty() {
                    names.insert(language.clone(), Value::String(text.trim().to_owned()));
                }
            }
            if !names.is_empty() {
                labels.insert(uri.to_owned(), Value::Object(names));
            }
        }
        Ok(SkillLabels(Arc::new(labels)))
    }

    pub fn get(&self, skill: &str) -> Option<Value> {
        self.0.get(skill).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Puts the file's labels on every skill in a summary.
    pub fn apply(&self, value: &mut Value) {
        if !self.is_empty() {
            xapi::llo::label_skills(value, &|skill| self.get(skill));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_file_gives_a_language_map_per_skill() {
        let text = "uri,en,nl\nhttp://esco/s/1,welding,lassen\nhttp://esco/s/2,,programmeren\n";
        let labels = SkillLabels::read(text.as_bytes()).expect("labels");
        assert_eq!(labels.get("http://esco/s/1").expect("one")["nl"], "lassen");
        assert!(labels
            .get("http://esco/s/2")
            .expect("two")
            .get("en")
            .is_none());
        let esco = "conceptUri,preferredLabel\nhttp://esco/s/3,soldering\n";
        let labels = SkillLabels::read(esco.as_bytes()).expect("esco");
        assert_eq!(
            labels.get("http://esco/s/3").expect("three")["en"],
            "soldering"
        );
        let bad = SkillLabels::read("uri,en\n,x\n".as_bytes()).expect_err("an empty URI");
        assert!(bad.contains("line 2"), "{bad}");
    }
}

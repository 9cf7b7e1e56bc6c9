//! The dashboard's words in Dutch and English.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Nl,
    En,
}

impl Lang {
    /// `?lang=` first, then the browser's first choice; Dutch when it prefers Dutch.
    pub fn pick(asked: Option<&str>, accept_language: Option<&str>) -> Lang {
        match asked {
            Some("nl") => return Lang::Nl,
            Some("en") => return Lang::En,
            _ => {}
        }
        match accept_language {
            Some(accept) if accept.trim_start().to_ascii_lowercase().starts_with("nl") => Lang::Nl,
            _ => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Nl => "nl",
            Lang::En => "en",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::Nl => Lang::En,
            Lang::En => Lang::Nl,
        }
    }

    /// The word for `key` (the key itself where none is known: never an empty label).
    pub fn t(self, key: &'static str) -> &'static str {
        let (nl, en) = match key {
            "title" => (
                "Leerspoor — programmadashboard",
                "Leerspoor — programme dashboard",
            ),
            "overview" => ("Programma", "Programme"),
            "search" => ("Zoeken", "Search"),
            "search_hint" => (
                "Hub-, bedrijfs- of werkende-ID (bijv. eindhoven, KVK-00000012, ann@example.org)",
                "Hub, company or worker identifier (e.g. eindhoven, KVK-00000012, ann@example.org)",
            ),
            "not_found" => ("Niets gevonden voor", "Nothing found for"),
            "companies_reached" => ("Bedrijven bereikt", "Companies reached"),
            "of_target" => ("van het doel", "of the target"),
            "target" => ("Doel", "Target"),
            "workers" => ("Werkenden", "Workers"),
            "statements" => ("Statements", "Statements"),
            "hubs" => ("Hubs", "Hubs"),
            "hub" => ("Hub", "Hub"),
            "name" => ("Naam", "Name"),
            "type" => ("Type", "Type"),
            "region" => ("Regio", "Region"),
            "regions" => ("Regio's", "Regions"),
            "month" => ("Maand", "Month"),
            "attendance" => ("Aanwezigheid", "Attendance"),
            "active_workers" => ("Actieve werkenden", "Active workers"),
            "companies_active" => ("Actieve bedrijven", "Active companies"),
            "companies_new" => ("Nieuw bereikt", "Newly reached"),
            "monthly" => (
                "Aanwezigheid en actieve werkenden per maand",
                "Monthly attendance and active workers",
            ),
            "reach" => (
                "Bereikte bedrijven (cumulatief) tegen het doel",
                "Companies reached (cumulative) against the target",
            ),
            "by_type" => ("Per type hub", "By hub type"),
            "learner_groups" => ("Doelgroepen", "Learner groups"),
            "youth" => ("Jongeren in opleiding", "Youth in education"),
            "worker" => ("Werkenden", "Workers"),
            "jobseeker" => ("Werkzoekenden", "Jobseekers"),
            "unknown" => ("Onbekend", "Unknown"),
            "hubs_ranked" => ("Hubs naar bereik", "Hubs ranked by reach"),
            "companies" => ("Bedrijven", "Companies"),
            "company" => ("Bedrijf", "Company"),
            "sessions" => ("Sessies", "Sessions"),
            "months" => ("Maanden", "Months"),
            "top_skills" => ("Meest aangetoonde vaardigheden", "Top skills"),
            "skill" => ("Vaardigheid", "Skill"),
            "skills" => ("Vaardigheden", "Skills"),
            "skills_over_time" => ("Vaardigheden door de tijd", "Skills over time"),
            "completed_activities" => ("Afgeronde activiteiten", "Completed activities"),
            "learning_hours" => ("Leeruren", "Learning hours"),
            "timeline" => ("Tijdlijn", "Timeline"),
            "first_evidenced" => ("Eerst aangetoond", "First evidenced"),
            "first" => ("Eerste", "First"),
            "last" => ("Laatste", "Last"),
            "download_csv" => ("Download CSV", "Download CSV"),
            "unregistered" => ("Niet geregistreerd", "Unregistered"),
            "technohub" => ("Technohub", "Technohub"),
            "fieldlab" => ("Fieldlab", "Fieldlab"),
            "share" => ("Aandeel", "Share"),
            "worker_page" => ("Werkende", "Worker"),
            "chart_table" => ("De cijfers in de grafiek", "The figures in the chart"),
            "language" => ("English", "Nederlands"),
            "as_of" => ("Stand na LRS_STORED-bericht", "As of LRS_STORED message"),
            "more" => ("Meer", "More"),
            _ => (key, key),
        };
        match self {
            Lang::Nl => nl,
            Lang::En => en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_query_then_the_browser() {
        assert_eq!(Lang::pick(Some("nl"), Some("en-GB")), Lang::Nl);
        assert_eq!(Lang::pick(None, Some("nl-NL,nl;q=0.9,en;q=0.8")), Lang::Nl);
        assert_eq!(Lang::pick(None, None), Lang::En);
        assert_eq!(Lang::En.t("workers"), "Workers");
        assert_eq!(Lang::Nl.t("workers"), "Werkenden");
    }
}

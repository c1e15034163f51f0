//! The log line of a key or upstream event, with its fields for JSON logs.

/// A key or upstream event's log line, with the fields JSON lines carry
/// (`event`, `key`, `upstream`, `until`, `model`, `reason`, `next`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Note {
    pub text: String,
    pub fields: Vec<(&'static str, String)>,
}

impl Note {
    pub fn new(text: String, fields: Vec<(&'static str, String)>) -> Note {
        Note { text, fields }
    }

    /// The line with `; {more}` after it and one more field.
    pub fn then(mut self, more: &str, field: (&'static str, String)) -> Note {
        self.text.push_str("; ");
        self.text.push_str(more);
        self.fields.push(field);
        self
    }

    /// Logs it at INFO under `switchyard::keys`.
    pub fn log(&self) {
        let fields: Vec<(&str, &str)> = self.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::logging::event(log::Level::Info, "switchyard::keys", &self.text, &fields);
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

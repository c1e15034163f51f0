//! The usage store's staging queue: records as the request path hands them
//! over, their names (models, request id) in one text buffer.

/// One request, as the request path hands it over: plain numbers (names are
/// `store::names` numbers), so queuing it copies one cache line with the
/// model names and the writer frees nothing the request thread allocated
/// (see [`super::usage::record`]). Times in microseconds saturate at ~71 minutes, tokens
/// at 2³² − 1.
#[derive(Default, Clone, Copy)]
pub struct Record {
    /// When the request ended, µs since the epoch (orders a batch's
    /// records; stored in ms).
    pub ts_us: u64,
    pub client: u32,
    pub upstream: u32,
    /// The key's public id (`github#2 (…Xq9f)`), never the key.
    pub key: u32,
    pub route: u32,
    pub error: u32,
    pub latency_us: u32,
    /// Streams: request start to the first event the client got.
    pub ttft_us: Option<u32>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub status: u16,
    pub attempts: u16,
    /// No upstream reported usage: the tokens are the gateway's estimate.
    pub estimated: bool,
    /// What the request cost, in picodollars (`prices`).
    pub cost: u64,
}

impl Record {
    /// `d` in whole microseconds, saturating.
    pub fn micros(d: std::time::Duration) -> u32 {
        u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
    }
}

/// The text of a record: the model asked, the one served (when another
/// answered), the answer's request id (empty: none).
pub struct RecordNames<'a> {
    pub model: &'a str,
    pub served: Option<&'a str>,
    pub request_id: &'a str,
}

/// A model name is stored up to this many bytes (cut at a character
/// boundary): longer ones are not names a provider serves.
pub const MAX_MODEL: usize = 256;

/// A queued record and where its model names are in the queue's text: the
/// model asked at `at`, then the one served (`served_len` 0: the model
/// asked answered), then its request id. 72 bytes.
#[derive(Clone, Copy)]
pub struct Queued {
    pub r: Record,
    at: u32,
    model_len: u16,
    served_len: u16,
    /// The answer's `x-request-id`, after the models in the text.
    id_len: u8,
}

/// A request id is stored up to this many bytes (the gateway's are 26).
pub const MAX_REQUEST_ID: usize = 128;

/// Records waiting for the writer, their model names in one text buffer.
#[derive(Default)]
pub struct Queue {
    pub records: Vec<Queued>,
    pub text: String,
}

impl Queue {
    /// Appends `s` (cut to `max` bytes) and gives its length.
    pub fn push_text(&mut self, s: &str, max: usize) -> u16 {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        end as u16
    }

    pub fn push(&mut self, r: Record, names: &RecordNames<'_>) {
        let at = self.text.len() as u32;
        let model_len = self.push_text(names.model, MAX_MODEL);
        let served_len = names.served.map_or(0, |s| self.push_text(s, MAX_MODEL));
        let id_len = self.push_text(names.request_id, MAX_REQUEST_ID) as u8;
        self.records.push(Queued {
            r,
            at,
            model_len,
            served_len,
            id_len,
        });
    }

    /// The model asked and the one served of `q`.
    pub fn models(&self, q: &Queued) -> (&str, Option<&str>) {
        let at = q.at as usize;
        let mid = at + usize::from(q.model_len);
        let end = mid + usize::from(q.served_len);
        let model = self.text.get(at..mid).unwrap_or_default();
        (model, self.text.get(mid..end).filter(|s| !s.is_empty()))
    }

    /// The request id of `q` (empty: none).
    pub fn request_id(&self, q: &Queued) -> &str {
        let at = q.at as usize + usize::from(q.model_len) + usize::from(q.served_len);
        self.text
            .get(at..at + usize::from(q.id_len))
            .unwrap_or_default()
    }

    /// Moves `other`'s records here (leaving it empty), keeping at most
    /// `max` in all; gives how many did not fit.
    pub fn append(&mut self, other: &mut Queue, max: usize) -> usize {
        let fit = other
            .records
            .len()
            .min(max.saturating_sub(self.records.len()));
        let base = self.text.len() as u32;
        self.text.push_str(&other.text);
        self.records
            .extend(other.records[..fit].iter().map(|q| Queued {
                at: q.at + base,
                ..*q
            }));
        let dropped = other.records.len() - fit;
        other.clear();
        dropped
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.text.clear();
    }
}

//! The patient record's tables: entries made from the topics (rebuilt by replaying them), the
//! links between a patient's references, and the accounts patients sign in with.

use hixbus_consent::ConsentBook;
use hixbus_contracts::{
    CheckupCompleted, ClaimAdjudicated, ClaimSubmitted, LabResultReported, MedicationAlert,
    PrescriptionCancelled, PrescriptionDispensed, PrescriptionIssued,
};
use hixbus_service::ReadModelError;
use hixbus_storage::{Database, placeholders};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The most references one patient's record gathers (their insurance references over the years
/// and the local ids institutions linked to them); a chain longer than this is a loop.
pub const MAX_REFS: usize = 64;
/// The most entries one read of a whole record returns (the export, the views). A lifetime of
/// weekly prescriptions and monthly results is a few thousand.
pub const MAX_RECORD_ENTRIES: i64 = 20_000;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Prescription,
    Dispensing,
    Alert,
    LabResult,
    Checkup,
    Claim,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Prescription,
        Kind::Dispensing,
        Kind::Alert,
        Kind::LabResult,
        Kind::Checkup,
        Kind::Claim,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prescription => "prescription",
            Kind::Dispensing => "dispensing",
            Kind::Alert => "alert",
            Kind::LabResult => "lab_result",
            Kind::Checkup => "checkup",
            Kind::Claim => "claim",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The event an entry was made from.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Prescription(PrescriptionIssued),
    Dispensing(PrescriptionDispensed),
    Alert(MedicationAlert),
    LabResult(LabResultReported),
    Checkup(CheckupCompleted),
    Claim(ClaimSubmitted),
}

impl Fact {
    pub fn kind(&self) -> Kind {
        match self {
            Fact::Prescription(_) => Kind::Prescription,
            Fact::Dispensing(_) => Kind::Dispensing,
            Fact::Alert(_) => Kind::Alert,
            Fact::LabResult(_) => Kind::LabResult,
            Fact::Checkup(_) => Kind::Checkup,
            Fact::Claim(_) => Kind::Claim,
        }
    }

    fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Fact::Prescription(e) => serde_json::to_string(e),
            Fact::Dispensing(e) => serde_json::to_string(e),
            Fact::Alert(e) => serde_json::to_string(e),
            Fact::LabResult(e) => serde_json::to_string(e),
            Fact::Checkup(e) => serde_json::to_string(e),
            Fact::Claim(e) => serde_json::to_string(e),
        }
    }

    fn from_json(kind: Kind, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            Kind::Prescription => Fact::Prescription(serde_json::from_str(json)?),
            Kind::Dispensing => Fact::Dispensing(serde_json::from_str(json)?),
            Kind::Alert => Fact::Alert(serde_json::from_str(json)?),
            Kind::LabResult => Fact::LabResult(serde_json::from_str(json)?),
            Kind::Checkup => Fact::Checkup(serde_json::from_str(json)?),
            Kind::Claim => Fact::Claim(serde_json::from_str(json)?),
        })
    }
}

/// What changed an entry later without replacing it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Cancelled(PrescriptionCancelled),
    Decision(ClaimAdjudicated),
}

impl Change {
    fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Change::Cancelled(e) => serde_json::to_string(e),
            Change::Decision(e) => serde_json::to_string(e),
        }
    }

    fn from_json(update_key: &str, json: &str) -> Result<Self, serde_json::Error> {
        if update_key == CANCELLED {
            Ok(Change::Cancelled(serde_json::from_str(json)?))
        } else {
            Ok(Change::Decision(serde_json::from_str(json)?))
        }
    }
}

/// The update key of a prescription's cancellation.
pub const CANCELLED: &str = "cancelled";

/// The update key of the decision on version `version` of a claim.
pub fn decision_key(version: i32) -> String {
    format!("decision:{version}")
}

/// One entry of a patient's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub patient_ref: String,
    pub event_id: String,
    /// When it happened, ms since the epoch.
    pub at: i64,
    pub org_id: String,
    /// Orders the versions of one entry: a later version replaces an earlier one.
    pub rank: i64,
    pub fact: Fact,
    /// (update key, change), by key.
    pub changes: Vec<(String, Change)>,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        self.fact.kind()
    }

    pub fn cancellation(&self) -> Option<&PrescriptionCancelled> {
        self.changes.iter().find_map(|(_, c)| match c {
            Change::Cancelled(e) => Some(e),
            Change::Decision(_) => None,
        })
    }

    /// The insurer's decision on version `version` of this claim, if any.
    pub fn decision(&self, version: i32) -> Option<&ClaimAdjudicated> {
        let key = decision_key(version);
        self.changes.iter().find_map(|(k, c)| match c {
            Change::Decision(e) if *k == key => Some(e),
            _ => None,
        })
    }
}

/// Which entries a timeline page shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kinds: Vec<Kind>,
    /// Inclusive, ms since the epoch.
    pub from: Option<i64>,
    /// Exclusive, ms since the epoch.
    pub to: Option<i64>,
    /// Only entries before this (at, kind, key) (the page before).
    pub before: Option<(i64, String, String)>,
    pub limit: i64,
}

/// What an enrolment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// The sign-in now reads this patient's record.
    Now(String),
    /// The code is unknown, used or expired.
    BadCode,
    /// The sign-in is enrolled as another patient already.
    Taken,
}

/// A delegation to record.
#[derive(Debug, Clone)]
pub struct NewDelegation<'a> {
    pub id: &'a str,
    pub patient_ref: &'a str,
    pub relationship: &'a str,
    pub code_sha256: &'a str,
    pub code_expires_at: i64,
    pub created_at: i64,
    pub until_ms: i64,
}

/// Proxy access a patient granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub id: String,
    pub patient_ref: String,
    pub relationship: String,
    /// (issuer, subject) of the proxy, once accepted.
    pub proxy: Option<(String, String)>,
    pub code_expires_at: i64,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
    pub until_ms: i64,
    pub revoked_at: Option<i64>,
}

impl Delegation {
    /// Whether it lets its proxy act for the patient at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.proxy.is_some() && self.revoked_at.is_none() && self.until_ms > now_ms
    }

    pub fn status(&self, now_ms: i64) -> &'static str {
        match (self.revoked_at, self.proxy.is_some()) {
            (Some(_), _) => "revoked",
            (None, _) if self.until_ms <= now_ms => "expired",
            (None, true) => "active",
            (None, false) if self.code_expires_at <= now_ms => "expired",
            (None, false) => "invited",
        }
    }
}

const DELEGATION: &str = "SELECT id, patient_ref, relationship, proxy_issuer, proxy_subject,
    code_expires_at, created_at, accepted_at, until_ms, revoked_at FROM delegations";

fn delegation_from_row(r: &AnyRow) -> Result<Delegation, ReadModelError> {
    let issuer: Option<String> = r.try_get(3)?;
    let subject: Option<String> = r.try_get(4)?;
    Ok(Delegation {
        id: r.try_get(0)?,
        patient_ref: r.try_get(1)?,
        relationship: r.try_get(2)?,
        proxy: issuer.zip(subject),
        code_expires_at: r.try_get(5)?,
        created_at: r.try_get(6)?,
        accepted_at: r.try_get(7)?,
        until_ms: r.try_get(8)?,
        revoked_at: r.try_get(9)?,
    })
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    /// The patient's consents, in the book every enforcing service keeps.
    pub book: ConsentBook,
}

fn entry_from_row(r: &AnyRow) -> Result<Entry, ReadModelError> {
    let kind: String = r.try_get(0)?;
    let kind = Kind::parse(&kind).ok_or_else(|| {
        ReadModelError::Json(serde::de::Error::custom(format!("unknown kind {kind:?}")))
    })?;
    let json: String = r.try_get(7)?;
    Ok(Entry {
        key: r.try_get(1)?,
        patient_ref: r.try_get(2)?,
        event_id: r.try_get(3)?,
        at: r.try_get(4)?,
        org_id: r.try_get(5)?,
        rank: r.try_get(6)?,
        fact: Fact::from_json(kind, &json)?,
        changes: Vec::new(),
    })
}

impl Store {
    pub async fn new(db: Database) -> Result<Self, sqlx::Error> {
        // The book's table first: migration 9005 moves the consents kept before it into it.
        let book = ConsentBook::new(db.clone()).await?;
        db.migrate(&crate::MIGRATIONS).await?;
        Ok(Self { db, book })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Keeps an entry, or replaces the one it is a later version of. Replaying the same event
    /// changes nothing.
    pub async fn put(&self, entry: &Entry) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO record_entries (kind, entry_key, patient_ref, event_id, at, org_id, rank, event)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (kind, entry_key) DO UPDATE SET
                 patient_ref = excluded.patient_ref, event_id = excluded.event_id,
                 at = excluded.at, org_id = excluded.org_id, rank = excluded.rank,
                 event = excluded.event
             WHERE record_entries.rank <= excluded.rank",
        )
        .bind(entry.kind().as_str())
        .bind(&entry.key)
        .bind(&entry.patient_ref)
        .bind(&entry.event_id)
        .bind(entry.at)
        .bind(&entry.org_id)
        .bind(entry.rank)
        .bind(entry.fact.to_json()?)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Keeps a change to the entry (`kind`, `key`), or replaces an earlier one under the same
    /// update key.
    pub async fn change(
        &self,
        kind: Kind,
        key: &str,
        update_key: &str,
        event_id: &str,
        rank: i64,
        change: &Change,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO record_updates (kind, entry_key, update_key, event_id, rank, event)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kind, entry_key, update_key) DO UPDATE SET
                 event_id = excluded.event_id, rank = excluded.rank, event = excluded.event
             WHERE record_updates.rank <= excluded.rank",
        )
        .bind(kind.as_str())
        .bind(key)
        .bind(update_key)
        .bind(event_id)
        .bind(rank)
        .bind(change.to_json()?)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records that `from_ref` is `patient_ref`'s (`kind`: `local` or `previous`), unless a
    /// later link of it is recorded already.
    pub async fn link(
        &self,
        from_ref: &str,
        kind: &str,
        patient_ref: &str,
        at: i64,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO record_links (from_ref, kind, patient_ref, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (from_ref, kind) DO UPDATE SET patient_ref = excluded.patient_ref,
                 at = excluded.at
             WHERE record_links.at <= excluded.at",
        )
        .bind(from_ref)
        .bind(kind)
        .bind(patient_ref)
        .bind(at)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Every reference that is `patient_ref`'s: itself, the local ids linked to it, the
    /// references it had before (and theirs), at most [`MAX_REFS`].
    pub async fn refs(&self, patient_ref: &str) -> Result<Vec<String>, ReadModelError> {
        let mut refs = vec![patient_ref.to_owned()];
        let mut frontier = refs.clone();
        while !frontier.is_empty() && refs.len() < MAX_REFS {
            let sql = format!(
                "SELECT from_ref FROM record_links WHERE patient_ref IN ({}) ORDER BY from_ref",
                placeholders(1, frontier.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for r in &frontier {
                query = query.bind(r);
            }
            let found = query.fetch_all(&self.db.pool).await?;
            frontier = found.into_iter().filter(|r| !refs.contains(r)).collect();
            refs.extend(frontier.iter().cloned());
        }
        refs.truncate(MAX_REFS);
        Ok(refs)
    }

    /// One page of the entries under `refs`, newest first, with their changes.
    pub async fn entries(
        &self,
        refs: &[String],
        filter: &Filter,
    ) -> Result<Vec<Entry>, ReadModelError> {
        let mut sql = format!(
            "SELECT kind, entry_key, patient_ref, event_id, at, org_id, rank, event
             FROM record_entries WHERE patient_ref IN ({})",
            placeholders(1, refs.len())
        );
        let mut n = refs.len();
        let mut next = || {
            n += 1;
            n
        };
        if !filter.kinds.is_empty() {
            let first = next();
            for _ in 1..filter.kinds.len() {
                next();
            }
            sql.push_str(&format!(
                " AND kind IN ({})",
                placeholders(first, filter.kinds.len())
            ));
        }
        if filter.from.is_some() {
            sql.push_str(&format!(" AND at >= ${}", next()));
        }
        if filter.to.is_some() {
            sql.push_str(&format!(" AND at < ${}", next()));
        }
        if filter.before.is_some() {
            let (a, b, c) = (next(), next(), next());
            sql.push_str(&format!(
                " AND (at < ${a} OR (at = ${a} AND (kind < ${b} OR (kind = ${b} AND entry_key < ${c}))))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY at DESC, kind DESC, entry_key DESC LIMIT ${}",
            next()
        ));
        let mut query = sqlx::query(&sql);
        for r in refs {
            query = query.bind(r);
        }
        for k in &filter.kinds {
            query = query.bind(k.as_str());
        }
        if let Some(from) = filter.from {
            query = query.bind(from);
        }
        if let Some(to) = filter.to {
            query = query.bind(to);
        }
        if let Some((at, kind, key)) = &filter.before {
            query = query.bind(*at).bind(kind.clone()).bind(key.clone());
        }
        query = query.bind(filter.limit);
        let rows = query.fetch_all(&self.db.pool).await?;
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_changes(&mut entries).await?;
        Ok(entries)
    }

    /// The whole record under `refs`, oldest first (at most [`MAX_RECORD_ENTRIES`]).
    pub async fn record(&self, refs: &[String]) -> Result<Vec<Entry>, ReadModelError> {
        let mut entries = self
            .entries(
                refs,
                &Filter {
                    limit: MAX_RECORD_ENTRIES,
                    ..Filter::default()
                },
            )
            .await?;
        entries.reverse();
        Ok(entries)
    }

    async fn attach_changes(&self, entries: &mut [Entry]) -> Result<(), ReadModelError> {
        let wanted: Vec<&Entry> = entries
            .iter()
            .filter(|e| matches!(e.kind(), Kind::Prescription | Kind::Claim))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut changes: std::collections::HashMap<(String, String), Vec<(String, Change)>> =
            std::collections::HashMap::new();
        for chunk in wanted.chunks(500) {
            let sql = format!(
                "SELECT kind, entry_key, update_key, event FROM record_updates
                 WHERE entry_key IN ({}) ORDER BY update_key",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query.bind(&e.key);
            }
            for r in query.fetch_all(&self.db.pool).await? {
                let kind: String = r.try_get(0)?;
                let key: String = r.try_get(1)?;
                let update_key: String = r.try_get(2)?;
                let json: String = r.try_get(3)?;
                let change = Change::from_json(&update_key, &json)?;
                changes
                    .entry((kind, key))
                    .or_default()
                    .push((update_key, change));
            }
        }
        for e in entries.iter_mut() {
            if let Some(c) = changes.remove(&(e.kind().as_str().to_owned(), e.key.clone())) {
                e.changes = c;
            }
        }
        Ok(())
    }

    /// Records an emergency access; its audit entry is the caller's to write.
    pub async fn add_break_glass(
        &self,
        id: &str,
        patient_ref: &str,
        org_id: &str,
        reason: &str,
        started_at: i64,
        until_ms: i64,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO break_glass (id, patient_ref, org_id, reason, started_at, until_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(patient_ref)
        .bind(org_id)
        .bind(reason)
        .bind(started_at)
        .bind(until_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Every emergency access to the patient under `refs`, latest first: (id, org, reason,
    /// started, until).
    pub async fn break_glass(
        &self,
        refs: &[String],
    ) -> Result<Vec<(String, String, String, i64, i64)>, ReadModelError> {
        let sql = format!(
            "SELECT id, org_id, reason, started_at, until_ms FROM break_glass
             WHERE patient_ref IN ({}) ORDER BY started_at DESC, id",
            placeholders(1, refs.len())
        );
        let mut query = sqlx::query_as(&sql);
        for r in refs {
            query = query.bind(r);
        }
        Ok(query.fetch_all(&self.db.pool).await?)
    }

    /// Records a delegation not accepted yet, with the digest of its invitation code.
    pub async fn create_delegation(&self, d: &NewDelegation<'_>) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO delegations (id, patient_ref, relationship, code_sha256, code_expires_at,
                 created_at, until_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.id)
        .bind(d.patient_ref)
        .bind(d.relationship)
        .bind(d.code_sha256)
        .bind(d.code_expires_at)
        .bind(d.created_at)
        .bind(d.until_ms)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Binds the sign-in to the delegation the code invites to, using the code up; the
    /// delegation, or `None` for an unknown, used, revoked or expired code. A patient cannot be
    /// their own proxy.
    pub async fn accept_delegation(
        &self,
        code_sha256: &str,
        issuer: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Option<Delegation>, ReadModelError> {
        let mut tx = self.db.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE delegations SET proxy_issuer = $1, proxy_subject = $2, accepted_at = $3,
                 code_sha256 = NULL
             WHERE code_sha256 = $4 AND accepted_at IS NULL AND revoked_at IS NULL
                 AND code_expires_at > $3 AND until_ms > $3
             RETURNING id",
        )
        .bind(issuer)
        .bind(subject)
        .bind(now_ms)
        .bind(code_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get(0)?;
        let delegation = Self::delegation_in(&mut tx, &id).await?;
        let own: Option<String> = sqlx::query_scalar(
            "SELECT patient_ref FROM patient_accounts WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await?;
        if delegation
            .as_ref()
            .is_none_or(|d| own.as_deref() == Some(d.patient_ref.as_str()))
        {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(delegation)
    }

    async fn delegation_in(
        conn: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<Delegation>, ReadModelError> {
        let row = sqlx::query(&format!("{DELEGATION} WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(delegation_from_row).transpose()
    }

    /// Every delegation the patient made, newest first.
    pub async fn delegations(&self, patient_ref: &str) -> Result<Vec<Delegation>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{DELEGATION} WHERE patient_ref = $1 ORDER BY created_at DESC, id"
        ))
        .bind(patient_ref)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(delegation_from_row).collect()
    }

    /// Every delegation the sign-in holds, accepted and not revoked (expired ones included).
    pub async fn held_by(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Vec<Delegation>, ReadModelError> {
        let rows = sqlx::query(&format!(
            "{DELEGATION} WHERE proxy_issuer = $1 AND proxy_subject = $2 AND revoked_at IS NULL
             ORDER BY created_at DESC, id"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(delegation_from_row).collect()
    }

    /// Revokes the patient's delegation `id`; `false` if they have none by that id.
    pub async fn revoke_delegation(
        &self,
        id: &str,
        patient_ref: &str,
        now_ms: i64,
    ) -> Result<bool, ReadModelError> {
        let done = sqlx::query(
            "UPDATE delegations SET revoked_at = $1, code_sha256 = NULL
             WHERE id = $2 AND patient_ref = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(patient_ref)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The patient a sign-in reads as, if it is enrolled.
    pub async fn account(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, ReadModelError> {
        Ok(sqlx::query_scalar(
            "SELECT patient_ref FROM patient_accounts WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Keeps a new enrolment code (its digest) for `patient_ref`.
    pub async fn issue_code(
        &self,
        code_sha256: &str,
        patient_ref: &str,
        issued_by: &str,
        expires_at: i64,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "INSERT INTO enrolment_codes (code_sha256, patient_ref, issued_by, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(code_sha256)
        .bind(patient_ref)
        .bind(issued_by)
        .bind(expires_at)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Binds the sign-in to the patient the code was issued for, using the code up; with
    /// `code_sha256` `None`, binds it to `direct` (the demo's enrolment, by the operator).
    pub async fn enrol(
        &self,
        issuer: &str,
        subject: &str,
        code_sha256: Option<&str>,
        direct: Option<(&str, &str)>,
        now_ms: i64,
    ) -> Result<Enrolled, ReadModelError> {
        let mut tx = self.db.pool.begin().await?;
        let (patient_ref, by): (String, String) = match (code_sha256, direct) {
            (Some(code), _) => {
                let row = sqlx::query(
                    "UPDATE enrolment_codes SET used_at = $1
                     WHERE code_sha256 = $2 AND used_at IS NULL AND expires_at > $1
                     RETURNING patient_ref, issued_by",
                )
                .bind(now_ms)
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => return Ok(Enrolled::BadCode),
                }
            }
            (None, Some((patient_ref, by))) => (patient_ref.to_owned(), by.to_owned()),
            (None, None) => return Ok(Enrolled::BadCode),
        };
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT patient_ref FROM patient_accounts WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(p) if p == patient_ref => {}
            // The code stays unused: the transaction is rolled back.
            Some(_) => return Ok(Enrolled::Taken),
            None => {
                sqlx::query(
                    "INSERT INTO patient_accounts (issuer, subject, patient_ref, enrolled_at, enrolled_by)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(issuer)
                .bind(subject)
                .bind(&patient_ref)
                .bind(chrono::Utc::now().to_rfc3339())
                .bind(&by)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Enrolled::Now(patient_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hixbus_contracts::samples;

    /// A database the service kept consents in itself (migrations up to 9004) moves them into
    /// the consent book when it starts on it: no consent lost, so no revocation forgotten.
    #[tokio::test]
    async fn consents_kept_before_the_book_move_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("record.db").display());
        let db = Database::connect(&url).await.unwrap();
        let before_the_book = sqlx::migrate::Migrator {
            migrations: crate::MIGRATIONS
                .migrations
                .iter()
                .filter(|m| m.version < 9005)
                .cloned()
                .collect(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        db.migrate(&before_the_book).await.unwrap();
        let revoked = hixbus_contracts::ConsentChanged {
            decision: hixbus_contracts::ConsentDecision::Revoked,
            ..samples::consent_changed("pt-1")
        };
        sqlx::query(
            "INSERT INTO record_consents (consent_id, patient_ref, at, event) VALUES ($1, $2, $3, $4)",
        )
        .bind(&revoked.consent_id)
        .bind(&revoked.envelope.patient_ref)
        .bind(revoked.envelope.occurred_at.unix_millis())
        .bind(serde_json::to_string(&revoked).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();

        let store = Store::new(db.clone()).await.unwrap();
        assert_eq!(
            store.book.consents(&["pt-1".to_owned()]).await.unwrap(),
            [revoked]
        );
        // Started again: nothing changes.
        let store = Store::new(db).await.unwrap();
        assert_eq!(
            store
                .book
                .consents(&["pt-1".to_owned()])
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

//! The sandbox directory: clinicians, imaging staff and patients. Fixed seed
//! data, inserted on every start with `INSERT OR IGNORE`, so a fresh data
//! folder and an old one list the same people.

use rusqlite::{Connection, OptionalExtension as _, params};

/// Identifier system of the sandbox's medical record numbers.
pub const MRN_SYSTEM: &str = "https://ferry.example/sandbox/mrn";
/// Identifier system of practitioners' NPIs (sandbox values, not real ones).
pub const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";

/// What a practitioner may do, which decides the scopes they are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Works in one patient's context: `launch/patient` and `patient/` scopes.
    Clinician,
    /// Acts for any patient and chooses one per transfer: `user/` scopes.
    ImagingStaff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::ImagingStaff => "imaging-staff",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "clinician" => Some(Role::Clinician),
            "imaging-staff" => Some(Role::ImagingStaff),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Practitioner {
    pub id: String,
    pub role: Role,
    pub family: String,
    pub given: String,
    pub npi: String,
}

impl Practitioner {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub id: String,
    pub family: String,
    pub given: String,
    /// FHIR administrative gender: `male`, `female`, `other` or `unknown`.
    pub gender: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub mrn: String,
}

impl Patient {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }
}

const PRACTITIONERS: &[(&str, Role, &str, &str, &str)] = &[
    ("dr-rivera", Role::Clinician, "Rivera", "Elena", "1000000001"),
    ("dr-chen", Role::Clinician, "Chen", "Wei", "1000000002"),
    ("tech-okafor", Role::ImagingStaff, "Okafor", "Ngozi", "1000000003"),
];

const PATIENTS: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("pat-001", "Nwosu", "Amara", "female", "1984-03-12", "MRN-100001"),
    ("pat-002", "Larsen", "Henrik", "male", "1972-11-02", "MRN-100002"),
    ("pat-003", "Moreno", "Lucia", "female", "2011-07-30", "MRN-100003"),
    // The patient of the sample study that scripts/make-test-study.py
    // writes, so that `ferry demo` passes the patient guard.
    ("pat-004", "Müller", "Jürgen", "male", "1970-01-31", "FERRY-0001"),
];

/// Inserts the seed practitioners and patients that are not there yet.
pub fn seed(connection: &Connection) -> rusqlite::Result<()> {
    for (id, role, family, given, npi) in PRACTITIONERS {
        connection.execute(
            "INSERT OR IGNORE INTO practitioners (id, role, family, given, npi) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, role.as_str(), family, given, npi],
        )?;
    }
    for (id, family, given, gender, birth_date, mrn) in PATIENTS {
        connection.execute(
            "INSERT OR IGNORE INTO patients (id, family, given, gender, birth_date, mrn)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, family, given, gender, birth_date, mrn],
        )?;
    }
    Ok(())
}

fn practitioner_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Practitioner> {
    let role: String = row.get(1)?;
    Ok(Practitioner {
        id: row.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Clinician),
        family: row.get(2)?,
        given: row.get(3)?,
        npi: row.get(4)?,
    })
}

fn patient_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Patient> {
    Ok(Patient {
        id: row.get(0)?,
        family: row.get(1)?,
        given: row.get(2)?,
        gender: row.get(3)?,
        birth_date: row.get(4)?,
        mrn: row.get(5)?,
    })
}

pub fn practitioner(connection: &Connection, id: &str) -> rusqlite::Result<Option<Practitioner>> {
    connection
        .query_row(
            "SELECT id, role, family, given, npi FROM practitioners WHERE id = ?1",
            [id],
            practitioner_from_row,
        )
        .optional()
}

pub fn practitioners(connection: &Connection) -> rusqlite::Result<Vec<Practitioner>> {
    let mut statement =
        connection.prepare("SELECT id, role, family, given, npi FROM practitioners ORDER BY id")?;
    let rows = statement.query_map([], practitioner_from_row)?;
    rows.collect()
}

pub fn patient(connection: &Connection, id: &str) -> rusqlite::Result<Option<Patient>> {
    connection
        .query_row(
            "SELECT id, family, given, gender, birth_date, mrn FROM patients WHERE id = ?1",
            [id],
            patient_from_row,
        )
        .optional()
}

pub fn patients(connection: &Connection) -> rusqlite::Result<Vec<Patient>> {
    let mut statement = connection
        .prepare("SELECT id, family, given, gender, birth_date, mrn FROM patients ORDER BY id")?;
    let rows = statement.query_map([], patient_from_row)?;
    rows.collect()
}

//! Realistic sample events, for tests, benchmarks and the demo stream.
//!
//! Drug codes are real HOT9 codes and names from the Japanese e-prescription examples; lab and
//! checkup items use real LOINC codes. Patients and organizations are fictional.

use crate::events::*;
use crate::time::{Date, Timestamp};

pub const HOT9: &str = "urn:oid:1.2.392.100495.20.2.74";
pub const JAMI_TIMING: &str = "urn:oid:1.2.392.200250.2.2.20.20";
pub const MERIT9_UNIT: &str = "urn:oid:1.2.392.100495.20.2.101";
pub const ROUTE: &str = "http://jpfhir.jp/fhir/ePrescription/CodeSystem/route-codes";
pub const LOINC: &str = "http://loinc.org";
pub const UCUM: &str = "http://unitsofmeasure.org";

fn envelope(producer: &str, patient: &str, at_millis: i64) -> Envelope {
    Envelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Timestamp::from_unix_millis(at_millis),
        producer_org: producer.to_owned(),
        patient_ref: patient.to_owned(),
        correlation_id: Some(format!("corr-{patient}")),
        causation_id: None,
    }
}

fn coded(system: &str, code: &str, display: &str) -> CodedConcept {
    CodedConcept::new(system, code, Some(display))
}

fn unit_quantity(value: f64, unit: &str, code: &str) -> Quantity {
    Quantity {
        value,
        unit: unit.to_owned(),
        unit_system: Some(MERIT9_UNIT.to_owned()),
        unit_code: Some(code.to_owned()),
    }
}

const DRUGS: &[(&str, &str)] = &[
    ("103835401", "ムコダイン錠２５０ｍｇ"),
    ("110626901", "パンスポリンＴ錠１００ １００ｍｇ"),
    ("100795402", "ボルタレン錠２５ｍｇ"),
    ("101129302", "ミオナール錠５０ｍｇ"),
    ("105271807", "プレドニン錠５ｍｇ"),
    ("107602401", "ロキソニン錠６０ｍｇ"),
    ("111436601", "アムロジピンＯＤ錠５ｍｇ「トーワ」"),
    ("103264901", "メトグルコ錠２５０ｍｇ"),
    ("114515701", "クレストール錠２．５ｍｇ"),
    ("106238001", "ガスター錠２０ｍｇ"),
    ("110040001", "ムコスタ錠１００ｍｇ"),
    ("105958401", "マグミット錠３３０ｍｇ"),
];

/// A prescription with `lines` medication lines (cycling through real HOT9 drugs).
pub fn prescription_issued(patient: &str, lines: usize) -> PrescriptionIssued {
    let lines = (0..lines)
        .map(|i| {
            let (code, name) = DRUGS[i % DRUGS.len()];
            let line_no = i32::try_from(i + 1).unwrap_or(i32::MAX);
            MedicationLine {
                line_no,
                rp_group: Some((line_no + 1) / 2),
                drug: coded(HOT9, code, name),
                other_codes: vec![],
                dose_per_administration: Some(unit_quantity(1.0, "錠", "TAB")),
                dose_per_day: Some(unit_quantity(3.0, "錠", "TAB")),
                route: Some(coded(ROUTE, "1", "内服")),
                timing_text: "1日3回朝昼夕食後".to_owned(),
                timing_code: Some(coded(
                    JAMI_TIMING,
                    "1013044400000000",
                    "内服・経口・１日３回朝昼夕食後",
                )),
                days_supply: Some(7),
                quantity: unit_quantity(21.0, "錠", "TAB"),
                generic_substitution_allowed: i % 3 != 0,
                instructions: (i == 0).then(|| "眠気に注意".to_owned()),
            }
        })
        .collect();
    PrescriptionIssued {
        envelope: envelope("clinic-sakura", patient, 1_711_965_600_000),
        prescription_id: format!("rx-{patient}-0001"),
        prescriber: PractitionerRef {
            id: "doc-0042".to_owned(),
            name: Some("東京 太郎".to_owned()),
            department: Some("内科".to_owned()),
        },
        issuer: InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: Some("1310000001".to_owned()),
            name: Some("さくら内科クリニック".to_owned()),
        },
        target_pharmacy_org: Some("pharmacy-aozora".to_owned()),
        access_code: String::new(),
        issued_on: Date::from_days_since_epoch(19_814),
        expires_on: Some(Date::from_days_since_epoch(19_817)),
        lines,
        notes: Some("後発品変更不可の指示あり（Rp1）".to_owned()),
        access_code_digest: Some(
            "k1:6a3f0d5c9b8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a".to_owned(),
        ),
        coverage: Some(coverage()),
    }
}

/// The Japanese e-prescription example's insurance: a health insurance society member with a
/// 30 % share and a public programme.
pub fn coverage() -> Coverage {
    Coverage {
        insurer_number: "06123456".to_owned(),
        insurer_org: Some("insurer-kenpo".to_owned()),
        symbol: Some("12345".to_owned()),
        number: "67890".to_owned(),
        branch: Some("01".to_owned()),
        copay_percent: Some(30),
        birth_date: Date::from_ymd(1960, 2, 11),
        public_programs: vec![PublicExpense {
            payer_number: "01234567".to_owned(),
            recipient_number: Some("12345678".to_owned()),
            copay_percent: 10,
            valid_from: Date::from_ymd(2024, 1, 1),
            valid_to: Date::from_ymd(2024, 12, 31),
        }],
        sex: Some(AdministrativeSex::Male),
    }
}

/// The smallest valid prescription: one line, every optional field absent.
pub fn prescription_issued_minimal(patient: &str) -> PrescriptionIssued {
    PrescriptionIssued {
        envelope: Envelope {
            event_id: "00000000-0000-7000-8000-000000000001".to_owned(),
            occurred_at: Timestamp::from_unix_millis(0),
            producer_org: "clinic-sakura".to_owned(),
            patient_ref: patient.to_owned(),
            correlation_id: None,
            causation_id: None,
        },
        prescription_id: "rx-min".to_owned(),
        prescriber: PractitionerRef {
            id: "doc-1".to_owned(),
            name: None,
            department: None,
        },
        issuer: InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: None,
            name: None,
        },
        target_pharmacy_org: None,
        access_code: String::new(),
        issued_on: Date::from_days_since_epoch(0),
        expires_on: None,
        lines: vec![MedicationLine {
            line_no: 1,
            rp_group: None,
            drug: CodedConcept::new(HOT9, "103835401", None),
            other_codes: vec![],
            dose_per_administration: None,
            dose_per_day: None,
            route: None,
            timing_text: "頓用".to_owned(),
            timing_code: None,
            days_supply: None,
            quantity: Quantity::new(10.0, "錠"),
            generic_substitution_allowed: true,
            instructions: None,
        }],
        notes: None,
        access_code_digest: None,
        coverage: None,
    }
}

pub fn prescription_cancelled(patient: &str) -> PrescriptionCancelled {
    PrescriptionCancelled {
        envelope: envelope("clinic-sakura", patient, 1_711_966_000_000),
        prescription_id: format!("rx-{patient}-0001"),
        cancelled_by: PractitionerRef {
            id: "doc-0042".to_owned(),
            name: Some("東京 太郎".to_owned()),
            department: None,
        },
        reason: "用量の誤りのため再発行".to_owned(),
    }
}

pub fn prescription_claimed(patient: &str) -> PrescriptionClaimed {
    PrescriptionClaimed {
        envelope: envelope("pharmacy-aozora", patient, 1_711_969_000_000),
        prescription_id: format!("rx-{patient}-0001"),
        issuer_org: "clinic-sakura".to_owned(),
        pharmacy: InstitutionRef {
            org_id: "pharmacy-aozora".to_owned(),
            institution_code: Some("1340000007".to_owned()),
            name: Some("あおぞら薬局".to_owned()),
        },
    }
}

pub fn prescription_dispensed(patient: &str) -> PrescriptionDispensed {
    PrescriptionDispensed {
        envelope: envelope("pharmacy-aozora", patient, 1_711_972_800_000),
        prescription_id: format!("rx-{patient}-0001"),
        issuer_org: "clinic-sakura".to_owned(),
        pharmacy: InstitutionRef {
            org_id: "pharmacy-aozora".to_owned(),
            institution_code: Some("1340000007".to_owned()),
            name: Some("あおぞら薬局".to_owned()),
        },
        pharmacist: PractitionerRef {
            id: "ph-007".to_owned(),
            name: Some("薬剤 花子".to_owned()),
            department: None,
        },
        lines: vec![
            DispensedLine {
                prescription_line_no: 1,
                drug: coded(HOT9, "103835401", "ムコダイン錠２５０ｍｇ"),
                quantity: unit_quantity(21.0, "錠", "TAB"),
                days_supply: Some(7),
                substituted: false,
                substitution_reason: None,
            },
            DispensedLine {
                prescription_line_no: 2,
                drug: coded(HOT9, "112233401", "カルボシステイン錠２５０ｍｇ「サワイ」"),
                quantity: unit_quantity(21.0, "錠", "TAB"),
                days_supply: Some(7),
                substituted: true,
                substitution_reason: Some("後発医薬品へ変更（患者希望）".to_owned()),
            },
        ],
        partial: false,
        notes: None,
    }
}

fn observation(code: &str, name: &str, value: f64, unit: &str, range: (f64, f64)) -> Observation {
    let interpretation = if value < range.0 {
        Interpretation::Low
    } else if value > range.1 {
        Interpretation::High
    } else {
        Interpretation::Normal
    };
    Observation {
        code: coded(LOINC, code, name),
        value_numeric: Some(value),
        value_coded: None,
        value_text: None,
        unit: Some(unit.to_owned()),
        reference_range: Some(ReferenceRange {
            low: Some(range.0),
            high: Some(range.1),
            text: None,
        }),
        other_codes: vec![coded("urn:hixbus:hl7v2:99LOCAL", &format!("L{code}"), name)],
        interpretation,
    }
}

pub fn lab_result_reported(patient: &str) -> LabResultReported {
    LabResultReported {
        envelope: envelope("lab-minato", patient, 1_712_000_000_000),
        report_id: format!("lab-{patient}-77"),
        order_id: "ORD-2024-0401-0099".to_owned(),
        ordering: Some(InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: Some("1310000001".to_owned()),
            name: Some("さくら内科クリニック".to_owned()),
        }),
        performing_lab: InstitutionRef {
            org_id: "lab-minato".to_owned(),
            institution_code: None,
            name: Some("みなと臨床検査センター".to_owned()),
        },
        status: ReportStatus::Final,
        specimen: Specimen {
            specimen_id: Some("SP-88812".to_owned()),
            specimen_type: CodedConcept::new(
                "http://terminology.hl7.org/CodeSystem/v2-0487",
                "SER",
                Some("血清"),
            ),
            collected_at: Timestamp::from_unix_millis(1_711_990_000_000),
        },
        results: vec![
            observation("4548-4", "HbA1c", 7.2, "%", (4.6, 6.2)),
            observation("2345-7", "血糖", 142.0, "mg/dL", (73.0, 109.0)),
            observation("2160-0", "クレアチニン", 0.8, "mg/dL", (0.46, 0.79)),
            Observation {
                code: coded(LOINC, "5802-4", "尿亜硝酸塩"),
                value_numeric: None,
                value_coded: Some(coded("http://snomed.info/sct", "260385009", "Negative")),
                value_text: None,
                unit: None,
                reference_range: None,
                interpretation: Interpretation::Negative,
                other_codes: vec![],
            },
        ],
    }
}

pub fn checkup_completed(patient: &str) -> CheckupCompleted {
    CheckupCompleted {
        envelope: envelope("clinic-sakura", patient, 1_712_100_000_000),
        checkup_id: format!("chk-{patient}-2024"),
        checkup_type: CheckupType::SpecificHealthCheckup,
        performed_by: InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: Some("1310000001".to_owned()),
            name: Some("さくら内科クリニック".to_owned()),
        },
        performed_on: Date::from_days_since_epoch(19_815),
        items: vec![
            observation("8302-2", "身長", 171.2, "cm", (0.0, 250.0)),
            observation("29463-7", "体重", 74.5, "kg", (0.0, 300.0)),
            observation("39156-5", "BMI", 25.4, "kg/m2", (18.5, 25.0)),
            observation("8280-0", "腹囲", 88.0, "cm", (0.0, 85.0)),
            observation("8480-6", "収縮期血圧", 138.0, "mm[Hg]", (0.0, 130.0)),
            observation("8462-4", "拡張期血圧", 86.0, "mm[Hg]", (0.0, 85.0)),
            observation("4548-4", "HbA1c", 6.1, "%", (0.0, 5.6)),
            observation("1558-6", "空腹時血糖", 104.0, "mg/dL", (0.0, 100.0)),
            observation("2571-8", "中性脂肪", 160.0, "mg/dL", (0.0, 150.0)),
            observation("2085-9", "HDLコレステロール", 48.0, "mg/dL", (40.0, 999.0)),
            observation("13457-7", "LDLコレステロール", 132.0, "mg/dL", (0.0, 120.0)),
            observation("1920-8", "AST", 28.0, "U/L", (0.0, 31.0)),
            observation("1742-6", "ALT", 35.0, "U/L", (0.0, 31.0)),
            observation("2324-2", "γ-GT", 62.0, "U/L", (0.0, 51.0)),
        ],
        questionnaire: vec![QuestionnaireAnswer {
            question: coded("urn:oid:1.2.392.200119.6.1005", "42", "喫煙習慣"),
            answer_coded: Some(coded("urn:oid:1.2.392.200119.6.1005", "2", "いいえ")),
            answer_text: None,
        }],
        overall_assessment: Some("要指導（動機付け支援）".to_owned()),
        insurer: Some(InstitutionRef {
            org_id: "insurer-kenpo".to_owned(),
            institution_code: Some("06123456".to_owned()),
            name: Some("サンプル健康保険組合".to_owned()),
        }),
        metabolic_syndrome: Some(coded("urn:oid:1.2.392.200119.6.1008", "2", "予備群該当")),
        guidance_level: Some(coded("urn:oid:1.2.392.200119.6.3001", "2", "動機付け支援")),
    }
}

pub fn claim_submitted(patient: &str) -> ClaimSubmitted {
    ClaimSubmitted {
        envelope: envelope("clinic-sakura", patient, 1_714_500_000_000),
        claim_id: format!("clm-{patient}-202404"),
        insurer_org: "insurer-kenpo".to_owned(),
        member_id: "12345678-0001".to_owned(),
        provider: InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: Some("1310000001".to_owned()),
            name: Some("さくら内科クリニック".to_owned()),
        },
        service_start: Date::from_days_since_epoch(19_814),
        service_end: Date::from_days_since_epoch(19_843),
        diagnoses: vec![coded(
            "http://hl7.org/fhir/sid/icd-10",
            "E11.9",
            "2型糖尿病",
        )],
        lines: vec![
            ClaimLine {
                line_no: 1,
                service: coded("urn:oid:1.2.392.100495.20.2.71", "111000110", "初診料"),
                quantity: 1.0,
                unit_price_jpy: Some(2_910),
                amount_jpy: 2_910,
                line_type: ClaimLineType::Fee,
                prescription_line_no: None,
                unit: Some("回".to_owned()),
            },
            ClaimLine {
                line_no: 2,
                service: coded("urn:oid:1.2.392.100495.20.2.71", "160000410", "HbA1c"),
                quantity: 1.0,
                unit_price_jpy: Some(490),
                amount_jpy: 490,
                line_type: ClaimLineType::Other,
                prescription_line_no: None,
                unit: None,
            },
        ],
        total_amount_jpy: 3_400,
        patient_copay_jpy: 1_020,
        claim_type: ClaimType::Professional,
        version: 2,
        replaces_event_id: Some("0190a000-0000-7000-8000-000000000001".to_owned()),
        prescription_id: None,
        prescription_issuer_org: None,
        coverage: Some(coverage()),
        insurer_share_jpy: 2_380,
        public_expense_jpy: 0,
        tariff: Some("fees 2024-06-01".to_owned()),
    }
}

pub fn claim_adjudicated(patient: &str) -> ClaimAdjudicated {
    ClaimAdjudicated {
        envelope: envelope("insurer-kenpo", patient, 1_716_000_000_000),
        claim_id: format!("clm-{patient}-202404"),
        insurer_org: "insurer-kenpo".to_owned(),
        provider_org: "clinic-sakura".to_owned(),
        outcome: ClaimOutcome::PartiallyApproved,
        paid_amount_jpy: 2_037,
        reasons: vec![coded("urn:hixbus:adjudication-reason", "A", "適応外")],
        line_adjustments: vec![LineAdjustment {
            line_no: 2,
            paid_amount_jpy: 0,
            reason: Some(coded("urn:hixbus:adjudication-reason", "A", "適応外")),
        }],
        claim_version: 2,
        claim_event_id: Some("0190a000-0000-7000-8000-000000000002".to_owned()),
        reduced_by_jpy: 343,
    }
}

pub fn claim_evidence(patient: &str) -> ClaimEvidence {
    let line = |line_no, code, name, quantity, substituted| EvidenceLine {
        line_no,
        drug: coded(HOT9, code, name),
        quantity,
        unit: "錠".to_owned(),
        days_supply: Some(7),
        substituted,
    };
    ClaimEvidence {
        envelope: envelope("pharmacy-aozora", patient, 1_712_000_000_000),
        prescription_id: format!("rx-{patient}-0001"),
        insurer_org: "insurer-kenpo".to_owned(),
        stage: EvidenceStage::Dispensed,
        issuer: InstitutionRef {
            org_id: "clinic-sakura".to_owned(),
            institution_code: Some("1310000001".to_owned()),
            name: Some("さくら内科クリニック".to_owned()),
        },
        issued_on: Date::from_days_since_epoch(19_814),
        prescribed: vec![line(
            1,
            "103831601",
            "カルボシステイン錠２５０ｍｇ",
            21.0,
            false,
        )],
        dispensed: vec![line(
            1,
            "103831601",
            "カルボシステイン錠２５０ｍｇ",
            21.0,
            false,
        )],
        pharmacy: Some(InstitutionRef {
            org_id: "pharmacy-aozora".to_owned(),
            institution_code: None,
            name: Some("あおぞら薬局".to_owned()),
        }),
    }
}

pub fn consent_changed(patient: &str) -> ConsentChanged {
    ConsentChanged {
        envelope: envelope("portal", patient, 1_711_900_000_000),
        consent_id: format!("cns-{patient}-1"),
        grantee_org: Some("pharmacy-aozora".to_owned()),
        purpose: PurposeOfUse::Dispensing,
        scope: vec![DataCategory::Prescriptions, DataCategory::Dispensations],
        decision: ConsentDecision::Granted,
        valid_until: Some(Timestamp::from_unix_millis(1_711_986_400_000)),
    }
}

pub fn medication_alert(patient: &str) -> MedicationAlert {
    MedicationAlert {
        envelope: envelope("hixbus-safety", patient, 1_711_965_600_050),
        alert_id: format!("alert-{patient}-1"),
        prescription_id: format!("rx-{patient}-0002"),
        kind: AlertKind::DuplicateIngredient,
        severity: AlertSeverity::High,
        message: "ロキソプロフェンが他院の処方と重複しています".to_owned(),
        involved: vec![
            AlertLine {
                prescription_id: format!("rx-{patient}-0002"),
                line_no: 1,
                issuer_org: "hospital-minami".to_owned(),
                drug: coded(HOT9, "107602401", "ロキソニン錠６０ｍｇ"),
                active_from: Date::from_days_since_epoch(19_816),
                active_until: Some(Date::from_days_since_epoch(19_822)),
            },
            AlertLine {
                prescription_id: format!("rx-{patient}-0001"),
                line_no: 6,
                issuer_org: "clinic-sakura".to_owned(),
                drug: coded(HOT9, "107602401", "ロキソニン錠６０ｍｇ"),
                active_from: Date::from_days_since_epoch(19_814),
                active_until: Some(Date::from_days_since_epoch(19_820)),
            },
        ],
        rule_source: Some(
            "duplicate-ingredient: loxoprofen (docs/medication-safety.md)".to_owned(),
        ),
    }
}

/// One sample of every event type, in catalog order.
pub fn one_of_each(patient: &str) -> Vec<Event> {
    vec![
        prescription_issued(patient, 3).into(),
        prescription_cancelled(patient).into(),
        prescription_claimed(patient).into(),
        prescription_dispensed(patient).into(),
        lab_result_reported(patient).into(),
        checkup_completed(patient).into(),
        claim_submitted(patient).into(),
        claim_evidence(patient).into(),
        claim_adjudicated(patient).into(),
        consent_changed(patient).into(),
        medication_alert(patient).into(),
        patient_linked(patient).into(),
        patient_data_accessed(patient).into(),
        research_record(patient).into(),
        research_released().into(),
    ]
}

/// A released lab value; `patient` stands in for the subject's pseudonym.
pub fn research_record(patient: &str) -> ResearchRecord {
    ResearchRecord {
        envelope: Envelope {
            correlation_id: Some("release-1".to_owned()),
            ..envelope("hixbus-research", patient, 1_711_968_000_000)
        },
        project: "dm-outcomes".to_owned(),
        kind: ResearchItemKind::LabResult,
        institution: Some("inst-7f3a9c".to_owned()),
        day: Some(Date::from_days_since_epoch(19_700)),
        age_band: Some("50-59".to_owned()),
        region: Some("関東".to_owned()),
        code_system: Some("urn:oid:1.2.392.200119.4.504".to_owned()),
        code: Some("3D046000001920402".to_owned()),
        display: Some("HbA1c(NGSP)".to_owned()),
        value: Some(6.8),
        unit: Some("%".to_owned()),
        days_supply: None,
        quantity: None,
        sex: Some("female".to_owned()),
    }
}

/// The manifest of a release to the sample project.
pub fn research_released() -> ResearchReleased {
    ResearchReleased {
        envelope: Envelope {
            event_id: "release-1".to_owned(),
            ..envelope("hixbus-research", "", 1_711_968_000_000)
        },
        project: "dm-outcomes".to_owned(),
        researcher_org: "univ-research".to_owned(),
        mode: ResearchMode::Pseudonymized,
        key_id: "2026-11".to_owned(),
        outcome: ReleaseOutcome::Released,
        records: 1200,
        subjects: 310,
        k_required: 5,
        k_achieved: Some(7),
        quasi_identifiers: vec!["age_band".to_owned(), "region".to_owned()],
        generalized: vec![
            "age_band=10-year".to_owned(),
            "region=prefecture".to_owned(),
        ],
        suppressed: 14,
        opted_out: 3,
        reason: None,
        policy_version: "hixbus-research-2026-11".to_owned(),
        fairness: vec![GroupShare {
            dimension: "age_band".to_owned(),
            group: "80-89".to_owned(),
            source_share: 0.06,
            released_share: 0.04,
        }],
    }
}

pub fn patient_data_accessed(patient: &str) -> PatientDataAccessed {
    PatientDataAccessed {
        envelope: envelope("hixbus-pharmacy", patient, 1_711_967_000_000),
        actor: "pharmacy-aozora".to_owned(),
        actor_role: Some("pharmacy".to_owned()),
        action: "inbox.read".to_owned(),
        subject: format!("rx-{patient}-1"),
        purpose: Some("DISPENSING".to_owned()),
        policy: Some("role pharmacy: its own inbox".to_owned()),
    }
}

pub fn patient_linked(patient: &str) -> PatientLinked {
    PatientLinked {
        envelope: envelope("lab-kensa", patient, 1_711_966_000_000),
        org_id: "lab-kensa".to_owned(),
        local_id: format!("L-{patient}"),
        local_ref: format!("local:lab-kensa:L-{patient}"),
        source: LinkSource::Registered,
        previous_ref: None,
    }
}

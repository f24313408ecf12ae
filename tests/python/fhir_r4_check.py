"""Reads a FHIR R4 Bundle (JSON on stdin) with the fhir.resources package (R4, 4.0.1) and
prints what it read as JSON: each resource's type and id, and the content the test compares
(drugs, dispensed quantities, observation values, claim totals, decisions). A Bundle that is not
valid R4 raises, and the test fails with the validation errors."""
import json
import sys

import fhir.resources
from fhir.resources.bundle import Bundle

assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__

bundle = Bundle.parse_raw(sys.stdin.buffer.read())
out = {"resources": [], "requests": [], "dispenses": [], "observations": [], "claims": [], "responses": []}
for entry in bundle.entry or []:
    r = entry.resource
    out["resources"].append([r.resource_type, r.id])
    if r.resource_type == "MedicationRequest":
        out["requests"].append({
            "prescription": r.groupIdentifier.value,
            "code": r.medicationCodeableConcept.coding[0].code,
            "status": r.status,
        })
    elif r.resource_type == "MedicationDispense":
        out["dispenses"].append({
            "code": r.medicationCodeableConcept.coding[0].code,
            "quantity": float(r.quantity.value),
            "substituted": r.substitution.wasSubstituted,
        })
    elif r.resource_type == "Observation":
        value = None
        if r.valueQuantity is not None:
            value = float(r.valueQuantity.value)
        elif r.valueString is not None:
            value = r.valueString
        elif r.valueCodeableConcept is not None:
            value = r.valueCodeableConcept.text
        out["observations"].append({"code": r.code.coding[0].code, "value": value})
    elif r.resource_type == "Claim":
        out["claims"].append({"id": r.identifier[0].value, "total": int(r.total.value)})
    elif r.resource_type == "ClaimResponse":
        out["responses"].append({"outcome": r.outcome, "paid": int(r.total[0].amount.value)})
print(json.dumps(out, ensure_ascii=False))

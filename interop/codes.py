"""Coded concepts the outputs use: standard codes where one fits, else the private "99CXR".

Private codes are declared in the SR's Coding Scheme Identification, as PS3.3 C.12.1.1.7 asks.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCHEME = "99CXR"
SCHEME_NAME = "cxr-xai result concepts"


def private(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


PROBABILITY = private("probability_finding", "Calibrated probability of a finding")
THRESHOLD = private("threshold", "Operating threshold")
DECISION = private("decision", "Decision at the operating threshold")
CTR = private("ctr", "Cardiothoracic ratio")
EXPLANATION_WEAK = private("explanation_weak", "Explanation flagged as weak")
ZONE_INTENSITY = private("zone_intensity", "Explanation intensity in the zone")
METHODS = {
    "gradcam": private("gradcam", "Grad-CAM"),
    "lime": private("lime", "LIME"),
    "fused": private("fused", "Mean of Grad-CAM and LIME"),
}
DECISIONS = {
    "finding": codes.SCT.Abnormal,
    "no_finding": codes.SCT.Normal,
}
PROCEDURE = Code("399208008", "SCT", "Plain chest X-ray")
SECTIONS = {
    "findings": codes.DCM.Finding,
    "interpretation": codes.DCM.Impression,
    "recommendations": codes.DCM.Recommendation,
}
LANGUAGES = {
    "en": Code("en", "RFC5646", "English"),
    "ru": Code("ru", "RFC5646", "Russian"),
}
# Segment property types: SCT anatomy where it exists. The spine and abdomen are derived
# geometrically, which the segment description and algorithm type say.
STRUCTURES = {
    "right_lung": Code("3341006", "SCT", "Right lung"),
    "left_lung": Code("44029006", "SCT", "Left lung"),
    "heart_mediastinum": codes.SCT.Mediastinum,
    "spine": codes.SCT.Spine,
    "abdomen": codes.SCT.Abdomen,
}


def decision_code(decision: str) -> Code:
    return DECISIONS.get(decision) or private(decision, decision.replace("_", " ").capitalize())


def zone_code(zone_id: str) -> Code:
    return private(zone_id, zone_id.replace("_", " ") + " lung zone")

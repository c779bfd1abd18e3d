"""Hospital interoperability: analysis results as DICOM (SR, SEG, SC), FHIR R4B and STOW-RS.

A core package: it knows nothing of FastAPI or the service settings. Builders take frozen
dataclasses (:mod:`interop.model`) and the :class:`interop.source.SourceImage` the results were
computed from, and return pydicom datasets, FHIR resources or bytes.

Linkage rules, in one place: a DICOM input's Patient and General Study modules are copied into
every output and its SOP Instance is referenced; a non-DICOM input gets an anonymous patient and
a new study. Every UID is derived from the input's sha256 plus the model versions (and the
options that change an object's content), so a retry re-creates the same instances instead of
duplicating them in the PACS. Patient identifiers live only in these objects' patient fields.
"""

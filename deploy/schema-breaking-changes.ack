# Breaking changes to schema.graphql that are intended, one per line:
#
#   <CHANGE_TYPE> <path>: <reason>
#
# e.g. FIELD_REMOVED Session.reason: deprecated in v0.3.0 (2026-09-01), removed in v0.5.0
#
# deploy/check.sh compares schema.graphql with the last v* tag (or, with no
# tag, the previous commit) and fails on any breaking change not listed here;
# it prints the exact line to add. Entries name changes since that base:
# after a release tag, empty this file. See deploy/README.md, "Schema
# evolution", for the deprecation policy.

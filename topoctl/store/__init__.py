"""What topoctl keeps under its state directory: ownership records, the journal, locks, saved plans."""

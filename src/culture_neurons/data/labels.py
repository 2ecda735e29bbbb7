"""What a run without labels loses and what to do about it: one message for the dry run,
prepare_data's log and report, and the summary's Table 2 (no imports: every env reads it)."""

#: The public CVQA card says its Label "will always be -1" (answers withheld for a leaderboard).
HIDDEN_LABELS_HELP = (
    "Without labels there is no correctness filter (only_correct keeps every item) and no "
    "accuracy: the evaluation reports flip rates only, not the paper's accuracy changes. To score "
    "them, set dataset.labels_file to a file of the correct options: CSV or TSV with columns "
    "item_id (CVQA's ID) and label (0-3, the option's index), or a JSON object {ID: label} "
    "(docs/data.md, 'Hidden labels')."
)

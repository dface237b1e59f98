"""Video lists and class-name files, read from the formats users already have.

`read` reads a video list (`read_video_list`: detects the format and dispatches), one module per
format parses it (`text`, `csv_lists`, `kinetics`), `labels` turns label tokens into class indices,
`entries` holds the entry types and the checks every entry passes, `classes` reads class-name files
(`read_class_names`) and `lines` reads the text of both. Import from those modules: this package
re-exports nothing.
"""

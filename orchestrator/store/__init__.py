"""What is recorded: MLflow runs and their contents (``tracking``), the recorder that writes
every trial as a child run (``recorder``), and a study or search read back as typed rows
(``runs``)."""

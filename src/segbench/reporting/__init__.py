"""The paper's tables and figures and the report pages, built only from saved result files."""

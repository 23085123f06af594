"""Units of work: plain functions, each with a thin Prefect task wrapper beside it."""

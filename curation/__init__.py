"""DiHT data curation as `datasets` map/filter functions: CAT filtering and teacher concept labelling."""

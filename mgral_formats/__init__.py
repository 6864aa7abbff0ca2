"""Dataset and annotation file formats: readers, writers and exporters."""

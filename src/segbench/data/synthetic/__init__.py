"""The synthetic twins of each dataset, written in the real on-disk formats."""

"""Studies built on training: the ablation (Table 1), microvideos (Table 2), attention statistics."""

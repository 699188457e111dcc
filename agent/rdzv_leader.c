/* Placeholder: filled by the restructuring. */

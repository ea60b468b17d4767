"""The controlled knowledge benchmark: facts, documents that state them, and probes that test them."""

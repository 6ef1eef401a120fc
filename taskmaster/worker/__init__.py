"""Workers: dial the coordinator, run handlers in bounded slots, report back."""

"""What a person sees of a running `serving up`: the status document, the live view, the state file."""

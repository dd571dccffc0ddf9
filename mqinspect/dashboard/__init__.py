"""`mqinspect top`: the sampler that builds immutable snapshots, and the Textual app that draws them."""

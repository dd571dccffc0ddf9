"""`mqinspect demo`: a live store with a warming producer and consumers on several send paths."""

"""PyTorch interop: state_dict conversion (convert), the PyTorch reference networks and steps
(torch_ref, needs torch) and the parity checks between the two (parity)."""

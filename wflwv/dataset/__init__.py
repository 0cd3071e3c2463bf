"""wflwv.dataset"""

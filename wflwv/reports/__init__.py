"""wflwv.reports"""

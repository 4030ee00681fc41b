"""(gold, prediction, reward[, equivalent]) pairs in the answer styles of public math benchmarks
(MATH, GSM8K, AIME, AMC, Minerva, OlympiadBench), written for tests/test_answers.py.

`reward`: math_accuracy's verdict for a completion `\\boxed{prediction}` against the gold answer
(True 1.0, False 0.0, None: the gold cannot be judged). `equivalent`: answers_equivalent's verdict,
the same as `reward` unless given; it must hold in both argument orders. Rows marked FAULT failed
before the fix (issue 13); "math-verify rule" marks where the directed reward keeps a rule of
math-verify that the strict, symmetric equivalence does not.
"""

T, F = True, False

CASES = [
    # -- MATH: fractions, roots, pi ----------------------------------------------------------
    (r"\frac{1}{2}", "0.5", T),
    (r"\dfrac{3}{4}", r"\frac34", T),
    (r"\tfrac{2}{3}", r"\frac{2}{3}", T),
    (r"\frac{2}{3}", r"\frac{3}{2}", F),
    (r"-\frac12", "0.5", F),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", T),
    (r"2\sqrt{2}", r"\sqrt{8}", T),
    (r"3\sqrt{3}", r"\sqrt{27}", T),
    (r"\sqrt[3]{2}", "2^{1/3}", T),
    (r"\sqrt{2}", r"\sqrt{3}", F),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", T),
    (r"\pi", r"\pi", T),
    (r"\frac{\pi}{4}", r"\dfrac{\pi}{4}", T),
    (r"2\pi", "6.283185307179586", T),
    (r"\pi", "3.14", F),
    (r"\pi", "3.14159", F),
    (r"\frac{\pi}{6}", r"30^\circ", F),
    (r"5\sqrt{2}+1", r"1+5\sqrt{2}", T),
    (r"\frac{1+\sqrt{5}}{2}", r"\frac{1}{2}+\frac{\sqrt{5}}{2}", T),
    # degrees, percent, dollars
    (r"30^\circ", "30", T),
    (r"90^{\circ}", "90", T),
    (r"45^\circ", r"45^{\circ}", T),
    (r"10\%", "0.1", T),
    (r"50\%", r"\frac{1}{2}", T),
    (r"9\%", "9", T, F),  # math-verify rule (a percent gold accepts its number); 0.09 is not 9
    (r"25\%", "0.52", F),
    (r"\$18.90", "18.90", T),
    (r"\$1,000", "1000", T),
    (r"\$5", r"\$5.00", T),
    # intervals, unions
    ("[0,1)", "[0, 1)", T),
    ("[0,1)", "(0,1]", F),
    ("[2,5]", "[2,5)", F),
    (r"(-\infty, 3]", r"(-\infty,3]", T),
    (r"(-\infty,1)\cup(2,\infty)", r"(-\infty, 1) \cup (2, \infty)", T),
    (r"(-\infty,1)\cup(2,\infty)", r"(-\infty,1]\cup(2,\infty)", F),
    (r"\left[ -2, 3 \right]", "[-2,3]", T),
    # tuples, sets, lists
    ("(1,2)", "(1,2)", T),
    ("(1,2)", "(2,1)", F),
    ("(1,2)", "(1,2,3)", F),
    ("(1,2,3)", r"\left(1, 2, 3\right)", T),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", T),
    ("(1,2)", r"\{1,2\}", T, F),  # FAULT: an ordered pair is not a set (math-verify rule kept)
    ("(1,2)", "1,2", T, F),  # an ordered pair and a bare list
    (r"\{1,2\}", r"\{2,1\}", T),
    (r"\{1,2\}", r"\{1,3\}", F),
    ("1,2", "2,1", T),
    ("-2, 3", "3, -2", T),
    (r"\{1, 2, 3\}", "1, 2, 3", T),
    (r"\pm 2", r"\{-2, 2\}", T),
    (r"3 \text{ and } 4", "3, 4", T),
    (r"\emptyset", r"\varnothing", T),
    # matrices and vectors
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", T),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", F),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", T),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}", F),
    (r"\begin{pmatrix} 1/2 \\ 0 \end{pmatrix}", r"\begin{pmatrix} 0.5 \\ 0 \end{pmatrix}", T),
    # equations and expressions
    ("x=3", "3", T, F),  # FAULT: an equation is not its right-hand side (math-verify rule kept)
    ("3", "x=3", T, F),  # FAULT, the other way round
    ("x=3", "x=3", T),
    ("x=3", "y=3", F),
    ("x=3", "3=x", T),
    ("y=2x+1", "y=1+2x", T),
    ("y=2x+1", "2x+1", T, F),  # FAULT: a line is not an expression
    (r"y = -\frac{1}{2}x + 3", "y=-0.5x+3", T),
    ("x^2+2x+1", "(x+1)^2", T),
    ("x^2", "2x", F),
    ("2x", "2*x", T),
    (r"\frac{x}{2}", "x/2", T),
    (r"\frac{n(n+1)}{2}", r"\frac{n^2+n}{2}", T),
    ("n", "m", F),
    (r"x \le 3", r"x \leq 3", T),
    ("x<3", r"x\le3", F),
    ("1<x<2", "(1,2)", T, F),  # math-verify rule: an inequality gold accepts its interval
    (r"\infty", r"\infty", T),
    (r"-\infty", r"\infty", F),
    ("9!", "362880", T),
    (r"\binom{5}{2}", "10", T),
    ("2^{10}", "1024", T),
    (r"\log_2 8", "3", T),
    ("1+2i", "1+2i", T),
    ("1+2i", "1-2i", F),
    # e in its LaTeX spellings (FAULT: \mathrm{e} did not parse as Euler's number)
    ("e", r"\mathrm{e}", T),
    (r"\mathrm{e}^2", "e^2", T),
    (r"\mathrm{e}^{2}", "e^{3}", F),
    ("e^{-1}", r"\frac{1}{\mathrm{e}}", T),
    (r"\operatorname{e}^{x}", "e^x", T),
    # text answers, multiple choice (AMC)
    (r"\text{(C)}", "C", T),
    (r"\text{(C)}", r"\text{(B)}", F),
    (r"\textbf{(B)}", "B", T),
    ("B", r"\textbf{(B) }", T),
    (r"\textbf{(C)}\ 12", "C", T),
    (r"\textbf{(C)}\ 12", "12", T),
    ("C", r"\textbf{(C)}\ 12", T),
    ("D", r"\textbf{(C)}\ 12", F),
    (r"\text{Monday}", r"\text{monday}", T),
    (r"\text{Monday}", r"\text{Tuesday}", F),
    (r"\text{Yes}", r"\text{No}", F),
    # -- numbers: exactness and relative tolerance (FAULT: 6 fixed decimals) ---------------------
    ("0", "0.0", T),
    ("0.1", r"\frac{1}{10}", T),
    ("2.5", "2.50", T),
    ("0.30", "0.3", T),
    (r"\frac{1}{3}", "0.333333", F),  # FAULT: a 6-digit rounding was equal to 1/3
    (r"\frac{1}{3}", "0.3333333", F),
    (r"\frac{1}{3}", "0.333333333333", T),
    (r"\sqrt{2}", "1.41421356", F),
    (r"\sqrt{2}", "1.4142135623730951", T),
    (r"\frac{\sqrt{2}}{2}", "0.7071067811865476", T),
    (r"1.234567\times10^{-8}", r"1.234568\times10^{-8}", F),  # FAULT: 7th significant digit
    ("0.0000001", "0.0000002", F),  # FAULT: both rounded to 0.000000
    ("0.000001234567", "0.000001234568", F),  # FAULT: 7th significant digit, plain decimals
    ("0.00000012", "1.2e-7", T),
    (r"1.2\times10^{-5}", "1.2e-5", T),
    (r"1.2\times10^{-5}", "0.000012", T),
    (r"6.02\times10^{23}", r"6.02 \times 10^{23}", T),
    (r"6.02\times10^{23}", r"6.03\times10^{23}", F),
    ("10^{10}", "10^{10}+1", F),
    ("10000000000", "10000000001", F),
    ("2", "2.000001", F),
    # -- bases (FAULT: the subscript was dropped, so any base matched) ---------------------------
    ("101_2", "101_3", F),
    ("101_2", "101_{2}", T),
    ("101_2", "101", T),  # a base on one side only is ignored
    ("101_2", "5", F),  # the digits are the answer, not the value
    ("(101)_2", "101_2", T),
    ("0101_2", "101_2", T),
    ("1A_{16}", "1A_{16}", T),
    ("1A_{16}", "26", F),
    ("2012_3", "2012_{3}", T),
    ("2012_3", "2102_3", F),
    ("11_2", "3_{10}", F),
    ("123_2", "123_2", None, T),  # 3 is not a base-2 digit: unjudgeable gold, same text
    ("123_2", "123", None, F),
    # -- units (FAULT: units were dropped, so cm^2 matched cm^3) ---------------------------------
    (r"5\text{ cm}^2", r"5\text{ cm}^3", F),
    ("5 cm^2", "5 cm^3", F),
    (r"5\text{ cm}^2", r"5 \text{cm}^2", T),
    (r"5\text{ cm}^2", r"5\mathrm{cm}^{2}", T),
    (r"5\text{ cm}^2", "5", T),  # a unit on one side only is ignored
    ("5", r"5\text{ cm}^2", T),
    (r"5\text{ cm}", r"6\text{ cm}", F),
    (r"50\text{ cm}", r"0.5\text{ m}", F),  # no unit conversion
    (r"12\text{ km/h}", "12 km/h", T),
    (r"12\text{ km/h}", r"12\text{ m/s}", F),
    (r"\frac{9}{2}\text{ hours}", r"4.5\text{ hours}", T),
    (r"4.5\text{ hours}", r"4.5\text{ hour}", T),
    (r"\text{5 dollars}", "5", T),
    (r"\text{5 dollars}", r"\text{5 euros}", F),
    (r"20\text{ square units}", "20", T),
    (r"4 \mbox{ cm}^2", "4", T),
    # Minerva-style physical quantities
    (r"4.5 \mathrm{~km} / \mathrm{s}", r"4.5\text{ km/s}", T),
    (r"4.5 \mathrm{~km} / \mathrm{s}", r"4.5\text{ m/s}", F),
    ("7.2e27", r"7.2\times10^{27}", T),
    (r"5.5 \times 10^{-8} \mathrm{~cm}^{2}", r"5.5\times10^{-8}\text{ cm}^2", T),
    (r"5.5 \times 10^{-8} \mathrm{~cm}^{2}", r"5.5\times10^{-8}\text{ cm}^3", F),
    (r"3 \mathrm{~m} / \mathrm{s}^{2}", r"3\text{ m/s}^2", T),
    (r"6\frac{1}{4}", "6.25", T),  # a mixed number
    (r"3 \times 10^{8}", "300000000", T),
    (r"1.5 \times 10^{11}", r"1.5\times 10^{11}\text{ m}", T),
    # -- decimal comma (FAULT: 3,5 was read as the list {3, 5} only) -----------------------------
    ("3.5", "3,5", T),
    ("0.25", "0,25", T),
    ("-3.25", "-3,25", T),
    ("3.14159", "3,14159", T),
    ("3.5", "3, 5", F),  # a space after the comma: a list
    ("1000", "1,000", T),  # thousands separator
    ("1.000", "1,000", F),
    ("1234567", "1,234,567", T),
    ("3,5", r"\{3,5\}", T),
    ("3,5", "3.5", F, T),  # a gold is a list; for equivalence either reading
    (r"3,5\text{ cm}", r"3.5\text{ cm}", F, T),
    # -- GSM8K: integers, money, counts ----------------------------------------------------------
    ("72", "72", T),
    ("72", "72.0", T),
    ("72", r"\$72", T),
    ("72", r"72\text{ clips}", T),
    ("18", r"18\text{ dollars}", T),
    ("1234", "1,234", T),
    ("5", "-5", F),
    ("0.5", "1/2", T),
    ("624", "642", F),
    # -- AIME: three-digit integers ---------------------------------------------------------------
    ("17", "017", T),
    ("204", "204", T),
    ("204", "240", F),
    ("33", "33.", T),
    # -- OlympiadBench: $-delimited golds, expressions, tuples -----------------------------------
    (r"$\frac{1}{2}$", r"\frac12", T),
    ("$(2,3)$", "(2,3)", T),
    ("$x=2$", "$x=2$", T),
    (r"$\sqrt{5}-1$", r"-1+\sqrt{5}", T),
    ("$2^{2011}$", "2^{2011}", T),
    (r"$\displaystyle \frac{3}{4}$", "0.75", T),
    (r"$\dfrac{\sqrt{6}}{3}$", r"\frac{2}{\sqrt{6}}", T),
    # -- rows kept from the first equivalence table (tests/test_rewards_math.py) -----------------
    (".5", "0.5", T),
    ("1.5", r"\frac{3}{2}", T),
    (r"\$1,000.00", "1000", T),
    ("5 cm", "5", T),
    ("5 cm", "6", F),
    ("[0,1)", "[0,1]", F),
    ("1000", "100", F),
    ("1/3", "0.33", F),
    (r"50\%", "5", F),
    (r"\sqrt{2}", "2", F),
    (r"\frac{9}{2}\text{ hours}", "4.5", T),
    ("a", "b", F),
    # -- unparseable or missing ------------------------------------------------------------------
    ("5", "", F),
    ("???", "5", None, F),
    ("???", "???", None, T),
]

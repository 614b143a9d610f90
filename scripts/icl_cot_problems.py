"""Hand-written multi-step arithmetic word problems for ``arithmetic_cot`` (appended to its test split).

Written for hfx (nothing copied from GSM8K or another set): each problem takes two to four operations on
whole numbers, and its worked rationale states every step as ``a op b = c`` before "The answer is N." (the
exemplar style of Wei et al. 2022, https://arxiv.org/abs/2201.11903). Unlike the template problems of
``make_icl_data.py``, each has its own wording and structure (rates, fractions of a whole, nested
multiples, grouping into packs). ``tests/plugins/icl/test_icl_cot_data.py`` recomputes every step.
"""

from __future__ import annotations

Problem = tuple[str, str, int]  # question, rationale (without "The answer is N."), answer

HANDWRITTEN: list[Problem] = [
    ("A baker makes 4 trays of muffins with 12 muffins on each tray. She sells 29 muffins and gives 7 to her "
     "neighbours. How many muffins are left?",
     "The trays hold 4 * 12 = 48 muffins. After selling, 48 - 29 = 19 are left. After giving 7 away, 19 - 7 = 12 "
     "are left.", 12),
    ("A farmer has 3 fields. Each field has 15 rows of corn with 8 plants in each row. How many corn plants does "
     "the farmer have?",
     "One field has 15 * 8 = 120 plants. The 3 fields have 3 * 120 = 360 plants.", 360),
    ("Jake buys 3 notebooks at 4 dollars each and 2 pens at 3 dollars each. He pays with a 50-dollar bill. How "
     "many dollars of change does he get?",
     "The notebooks cost 3 * 4 = 12 dollars and the pens 2 * 3 = 6 dollars. Together 12 + 6 = 18 dollars. The "
     "change is 50 - 18 = 32 dollars.", 32),
    ("A library has 240 books. It lends out a quarter of them on Monday and gets 35 back on Tuesday. How many "
     "books are in the library on Tuesday evening?",
     "A quarter of the books is 240 / 4 = 60 books. After Monday there are 240 - 60 = 180. After Tuesday there "
     "are 180 + 35 = 215.", 215),
    ("A train travels 60 miles an hour for 3 hours and then 45 miles an hour for 2 hours. How many miles does it "
     "travel in all?",
     "First it travels 60 * 3 = 180 miles, then 45 * 2 = 90 miles. In all 180 + 90 = 270 miles.", 270),
    ("Mia is 4 years older than her brother. Her brother is 3 times as old as their cousin, who is 5. How old is "
     "Mia?",
     "The brother is 3 * 5 = 15 years old. Mia is 15 + 4 = 19 years old.", 19),
    ("A garden has 6 rows of tulips with 9 tulips in each row. A rabbit eats 14 tulips and the gardener plants "
     "20 more. How many tulips are in the garden now?",
     "There are 6 * 9 = 54 tulips. After the rabbit, 54 - 14 = 40. After planting, 40 + 20 = 60.", 60),
    ("A school orders 7 boxes of pencils with 24 pencils in each box. The pencils are shared equally among 6 "
     "classes. How many pencils does each class get?",
     "There are 7 * 24 = 168 pencils. Each class gets 168 / 6 = 28 pencils.", 28),
    ("A water tank holds 500 liters. On Monday 135 liters are used and on Tuesday 180 liters. How many liters "
     "are left in the tank?",
     "In the two days 135 + 180 = 315 liters are used. 500 - 315 = 185 liters are left.", 185),
    ("Carlos earns 15 dollars an hour. He works 6 hours on Saturday and 4 hours on Sunday, and spends 38 dollars "
     "on dinner. How many dollars of his pay does he have left?",
     "He works 6 + 4 = 10 hours and earns 10 * 15 = 150 dollars. After dinner he has 150 - 38 = 112 dollars.", 112),
    ("A parking lot has 5 levels with 32 spaces on each level. 97 cars are parked. How many spaces are empty?",
     "There are 5 * 32 = 160 spaces. 160 - 97 = 63 are empty.", 63),
    ("A cinema sells 85 tickets on Friday and 120 tickets on Saturday, at 9 dollars each. How many dollars does "
     "it take in the two days?",
     "It sells 85 + 120 = 205 tickets. They bring 205 * 9 = 1845 dollars.", 1845),
    ("Priya has 3 times as many stamps as Leo. Leo has 14 stamps. Priya gives 12 stamps to Leo. How many stamps "
     "does Priya have now?",
     "Priya has 3 * 14 = 42 stamps. After giving 12 away she has 42 - 12 = 30.", 30),
    ("A shop has 8 crates of oranges with 25 oranges in each crate. 18 oranges are rotten and thrown away, and "
     "the rest are packed into bags of 7. How many bags are filled?",
     "There are 8 * 25 = 200 oranges. Without the rotten ones, 200 - 18 = 182. They fill 182 / 7 = 26 bags.", 26),
    ("Sara runs 3 kilometers on each of the 5 weekdays and 8 kilometers on Saturday. She rests on Sunday. How "
     "many kilometers does she run in 2 weeks?",
     "On weekdays she runs 5 * 3 = 15 kilometers. A week is 15 + 8 = 23 kilometers. Two weeks are 2 * 23 = 46 "
     "kilometers.", 46),
    ("A pizza is cut into 8 slices. A family orders 5 pizzas and eats 33 slices. How many slices are left?",
     "There are 5 * 8 = 40 slices. 40 - 33 = 7 are left.", 7),
    ("A printer prints 20 pages a minute. How many minutes does it take to print 12 copies of a 45-page report?",
     "The copies have 12 * 45 = 540 pages. Printing takes 540 / 20 = 27 minutes.", 27),
    ("Tom had 90 dollars. He spent a third of it on a jacket and 17 dollars on lunch. How many dollars does he "
     "have left?",
     "The jacket cost 90 / 3 = 30 dollars. After it he had 90 - 30 = 60. After lunch he has 60 - 17 = 43 "
     "dollars.", 43),
    ("A box of tea holds 40 bags. An office has 2 full boxes and uses 6 bags a day for 5 days. How many bags are "
     "left?",
     "The boxes hold 2 * 40 = 80 bags. The office uses 6 * 5 = 30 bags. 80 - 30 = 50 are left.", 50),
    ("A zoo has 12 penguins. Each penguin eats 3 fish in the morning and 2 fish in the evening. How many fish do "
     "the penguins eat in 4 days?",
     "Each penguin eats 3 + 2 = 5 fish a day. The penguins eat 12 * 5 = 60 fish a day. In 4 days they eat "
     "4 * 60 = 240 fish.", 240),
    ("A rope is 84 meters long. It is cut into 4 equal pieces, and one piece is cut again into 3 equal parts. "
     "How many meters long is each of those parts?",
     "Each piece is 84 / 4 = 21 meters. Each part is 21 / 3 = 7 meters.", 7),
    ("Ella buys 4 packs of stickers with 15 stickers in each. She uses 24 stickers and gives half of the rest to "
     "her sister. How many stickers does Ella keep?",
     "She buys 4 * 15 = 60 stickers. After using some, 60 - 24 = 36 are left. She keeps 36 / 2 = 18.", 18),
    ("A bakery bakes 150 cookies and packs them 6 to a pack. 4 packs are dropped and thrown away. How many packs "
     "are left?",
     "It fills 150 / 6 = 25 packs. 25 - 4 = 21 packs are left.", 21),
    ("An orchard has 14 apple trees, and each tree gives 30 apples. The apples are sold in bags of 10 for 4 "
     "dollars a bag. How many dollars does the orchard make?",
     "The trees give 14 * 30 = 420 apples. They fill 420 / 10 = 42 bags. The bags sell for 42 * 4 = 168 "
     "dollars.", 168),
]
